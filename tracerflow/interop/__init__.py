"""Files other tools read: Neuronpedia's uploaded graphs (``neuronpedia``) and SAEBench's
core-evaluation results (``saebench``). Pure functions from tracerflow's graphs and records to
the other tool's format; the command line (``tracerflow export``, ``tracerflow upload``) reads
and writes the files."""
