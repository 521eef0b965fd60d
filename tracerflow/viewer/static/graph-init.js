// The viewer page's start-up code, moved out of circuit-tracer's index.html into its own file
// so the page runs under a Content-Security-Policy without 'unsafe-inline' scripts.
window.init = async function(){
  window.isLocalServing = true;
  var {graphs} = await util.getFile('./data/graph-metadata.json', false)

  window.visState = window.visState || {
    slug: util.params.get('slug') || graphs[0]?.slug,
    clickedId: util.params.get('clickedId')?.replace('null', ''),
    isGridsnap: util.params.get('isGridsnap')?.replace('null', ''),
  }

  // Find the current graph metadata
  var currentGraph = graphs.find(g => g.slug === visState.slug)
  // tracerflow: a slug the folder does not hold (a stale link, a typo) gets a page saying so
  if (!currentGraph) return renderUnknownGraph(visState.slug, graphs)
  
  // Initialize pruningThreshold only if the graph has node_threshold
  if (currentGraph && typeof currentGraph.node_threshold === 'number') {
    visState.pruningThreshold = util.params.get('pruningThreshold') || currentGraph.node_threshold || 0.4
  }

  // Create a container for the controls
  var navSel = d3.select('.nav').html('')
    .style('display', 'flex')
    .style('align-items', 'center')
    .style('padding-bottom', '15px')
    .style('justify-content', 'space-between')
  
  var controlsContainer = navSel.append('div.controls-container')
    .style('display', 'flex')
    .style('align-items', 'center')
    .style('flex', '1')
    .style('gap', '20px')
  
  var selectSel = controlsContainer.append('select.graph-prompt-select')
    .style('min-width', '300px')
    .style('max-width', '600px')
    .on('click', async function() {
      // Refetch graphs if local serving
      if (!window.isLocalServing) return;

      var {graphs: newGraphs} = await util.getFile('./data/graph-metadata.json', false)
      graphs = newGraphs

      // Rebuild the options
      selectSel.selectAll('option').remove()
      selectSel.appendMany('option', graphs)
        .text(optionText)
        .attr('title', d => d.transcoder_title || d.scan)
        .attr('value', d => d.slug)
        .property('selected', d => d.slug === visState.slug)
    })
    .on('change', function() {
      visState.slug = this.value
      visState.clickedId = undefined
      util.params.set('slug', this.value)
      
      // Update pruningThreshold when graph changes
      var newGraph = graphs.find(g => g.slug === this.value)
      if (newGraph && typeof newGraph.node_threshold === 'number') {
        visState.pruningThreshold = util.params.get('pruningThreshold') || newGraph.node_threshold || 0.4
      } else {
        delete visState.pruningThreshold
        util.params.set('pruningThreshold', null)
      }
      
      render()
    })

  // Create debounced render function
  var debouncedRender = util.debounce(render, 300)
  
  // Slider container will be created dynamically in render function
  var sliderContainer

  selectSel.appendMany('option', graphs)
    .text(optionText)
    .attr('title', d => d.transcoder_title || d.scan)
    .attr('value', d => d.slug)
    .property('selected', d => d.slug === visState.slug)

  // tracerflow: what Save answered about the pinned subgraph, as the status line's tail
  function subgraphText(answer) {
    var f = x => Number(x).toFixed(3)
    if (answer && answer.subgraph) {
      var g = answer.subgraph
      return ` · subgraph of ${g.n_pinned_features} pinned feature(s): replacement ` +
        `${f(g.subgraph_replacement_score)}, completeness ${f(g.subgraph_completeness_score)} ` +
        `(graph ${f(g.graph_replacement_score)} / ${f(g.graph_completeness_score)})`
    }
    if (answer && answer.subgraph_error) return ' · subgraph not scored: ' + answer.subgraph_error
    return ''
  }

  // Add save button to the right
  // tracerflow: Save says what happened next to the button (and to screen readers), and why
  // it failed when it did
  var saveContainer = navSel.append('div.tf-save')
  var saveStatus = saveContainer.append('span.tf-save-status')
    .attr('role', 'status')
    .attr('aria-live', 'polite')
  var saveButton = saveContainer.append('button.save-button')
    .text('Save')
    .style('display', window.isLocalServing ? 'block' : 'none')
    .on('click', function() {
      // Get current graph info
      

      var slug = visState.slug;
      if (!slug) {
        console.error("No slug found");
        return;
      }

      var url = `/save_graph/${slug}`;
      
      // Show loading state
      saveButton.text("Saving...")
        .attr("disabled", true)
        .style("opacity", 0.6);
      saveStatus.text('Saving…').classed('tf-save-ok', false).classed('tf-save-failed', false)
      
      // Send the POST request
      fetch(url, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
        },
        body: JSON.stringify({
          qParams: Object.fromEntries(["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos", "pruningThreshold", "clerps"]
            .map(k => [k, util.params.get(k)])
            .filter(([k, v]) => v !== undefined && v !== 'null')
          ),
          timestamp: new Date().toISOString()
        })
      })
      .then(async response => {
        if (!response.ok) {
          // The server answers {"error": "..."}: say that, not only the status
          var reason = await response.json().then(body => body.error, () => null)
          throw new Error(reason ? `${reason} (HTTP ${response.status})` : `HTTP ${response.status}`);
        }
        return response.json().catch(() => ({}));
      })
      .then(answer => {
        // tracerflow: a Save that pins nodes also scores that subgraph (docs/metrics.md)
        saveStatus.text('Saved at ' + new Date().toLocaleTimeString() + subgraphText(answer))
          .attr('title', 'The view (pinned nodes, groups, labels) is stored in the graph file')
          .classed('tf-save-ok', true)
        saveButton.text("Saved!")
          .style("background-color", "#e6f7e6")
          .style("border-color", "#8bc34a");
        
        // Reset button after 2 seconds
        setTimeout(() => {
          saveButton.text("Save")
            .attr("disabled", null)
            .style("opacity", null)
            .style("background-color", null)
            .style("border-color", null);
        }, 2000);
      })
      .catch(error => {
        saveStatus.text('Not saved: ' + error.message)
          .attr('title', null)
          .classed('tf-save-failed', true)
        saveButton.text("Error!")
          .style("background-color", "#ffebee")
          .style("border-color", "#f44336");
        
        // Reset button after 2 seconds
        setTimeout(() => {
          saveButton.text("Save")
            .attr("disabled", null)
            .style("opacity", null)
            .style("background-color", null)
            .style("border-color", null);
        }, 2000);
      });
    });

  function render() {
    var m = graphs.find(g => g.slug == visState.slug)
    if (!m) return
    
    // Handle slider creation/removal dynamically
    if (m && typeof m.node_threshold === 'number') {
      // Create slider if it doesn't exist
      if (!sliderContainer) {
        sliderContainer = controlsContainer.append('div.slider-container')
          .style('display', 'flex')
          .style('align-items', 'center')
          .style('gap', '8px')
        
        sliderContainer.append('span').text('Pruning:')
        
        var sliderSel = sliderContainer.append('input')
          .attr('type', 'range')
          .attr('min', 0)
          .attr('max', m.node_threshold)
          .attr('step', 0.01)
          .attr('value', visState.pruningThreshold || m.node_threshold)
          .on('input', function() {
            // Update state and UI immediately
            visState.pruningThreshold = this.value
            visState.clickedId = util.params.get('clickedId')?.replace('null', '')
            util.params.set('pruningThreshold', this.value)
            valueDisplay.text(parseFloat(this.value).toFixed(2))
            
            // Debounce the actual render
            debouncedRender()
          })
        
        var valueDisplay = sliderContainer.append('span.value-display')
          .text(parseFloat(visState.pruningThreshold || m.node_threshold).toFixed(2))
      }
      
      // Update slider properties for current graph
      sliderContainer.select('input')
        .attr('max', m.node_threshold)
        .property('value', visState.pruningThreshold || m.node_threshold)
      
      sliderContainer.select('.value-display')
        .text(parseFloat(visState.pruningThreshold || m.node_threshold).toFixed(2))
      
      sliderContainer.style('display', 'flex')
      
      // Ensure pruningThreshold is set
      if (visState.pruningThreshold === undefined) {
        visState.pruningThreshold = m.node_threshold
      }
    } else {
      // Remove slider if graph doesn't support pruning
      if (sliderContainer) {
        sliderContainer.remove()
        sliderContainer = null
      }
      delete visState.pruningThreshold
      util.params.set('pruningThreshold', null)
    }

    d3.select('.cg').html('')
    
    // Prepare options for initCg
    var options = {
      clickedId: visState.clickedId,
      clickedIdCb: id => util.params.set('clickedId', id),
      isGridsnap: visState.isGridsnap || true
    }
    
    // Only add pruningThreshold to options if it exists
    if (visState.pruningThreshold !== undefined) {
      options.pruningThreshold = visState.pruningThreshold
    }
    
    initCg(d3.select('.cg'), visState.slug, options)
    renderIdentity(m)
    renderScores(m)

    selectSel.at({title: m.prompt})
    document.title = 'Attribution Graph: ' + m.prompt
  }
  // tracerflow: what graph this is: the transcoder's source and revision (hash in the
  // tooltip) and the model, from the score database where it has them
  function renderIdentity(m) {
    var identitySel = d3.select('.tf-identity').html('')
    identitySel.append('span.tf-score-label').text('Transcoder ')
    identitySel.append('b.tf-transcoder')
      .text(m.transcoder_label || m.scan)
      .attr('title', m.transcoder_title || m.scan)
    if (m.model) {
      identitySel.append('span.tf-score-label').text(' · Model ')
      identitySel.append('b.tf-model').text(m.model)
    }
  }

  // tracerflow: the graph's replacement and completeness scores, unpruned and pruned, from
  // the score database (the server adds them to each graph-metadata entry; null if unknown).
  function renderScores(m) {
    var format = v => typeof v == 'number' ? v.toFixed(4) : '–'
    var scoresSel = d3.select('.tf-scores').html('')
    ;[
      ['Replacement', m.replacement_score],
      ['Completeness', m.completeness_score],
      ['Replacement (pruned)', m.pruned_replacement_score],
      ['Completeness (pruned)', m.pruned_completeness_score],
    ].forEach(([label, value]) => {
      var item = scoresSel.append('span.tf-score')
      item.append('span.tf-score-label').text(label + ' ')
      item.append('b').text(format(value))
    })
  }

  render()
}

// tracerflow: the dropdown names a graph by its transcoder's source and revision, not its hash
function optionText(d) {
  var prefix = d.title_prefix ? d.title_prefix + ' ' : ''
  return prefix + (d.transcoder_label || util.nameToPrettyPrint[d.scan] || d.scan) + ' — ' + d.prompt
}

// tracerflow: the page for a slug that names no graph here, instead of a blank page
function renderUnknownGraph(slug, graphs) {
  document.title = 'No such graph'
  var sel = d3.select('.cg').html('').append('div.tf-unknown-graph')
  sel.append('h2').text(slug ? `No graph named “${slug}”` : 'No graphs yet')
  sel.append('p').text(graphs.length
    ? `This viewer's folder holds ${graphs.length} graph(s), none of them by that name.`
    : 'This viewer\'s folder holds no graphs: export some (e.g. tracerflow demo) and reload.')
  sel.append('p').append('a').attr('href', '/').text('See all graphs')
}

window.init()
