window.initFeatureExamples = function({containerSel, showLogits=true, showExamples=true, hideStaleOutputs=false}){
  var visState = {
    isDev: 0,
    showLogits,
    showExamples,
    hideStaleOutputs,

    activeToken: null,
    feature: null,
    featureIndex: -1,

    chartRowTop: 16,
    chartRowHeight: 82,
  }

  // tracerflow: per page, the server's pack list (names and current versions), each pack's index
  // and each loaded feature
  // (set before the return below: the loaders are hoisted, these assignments are not).
  var packListPromise = null
  var packIndexPromises = new Map()
  var featurePromises = new Map()

  // set up dom and render fns
  var sel = containerSel.html('').append('div.feature-examples')
  if (visState.showLogits) sel.append('div.feature-example-logits')
  if (visState.showExamples) sel.append('div.feature-example-list')
  var renderAll = util.initRenderAll(['feature'])

  
  if (visState.showLogits) window.initFeatureExamplesLogits({renderAll, visState, sel})
  if (visState.showExamples) window.initFeatureExamplesList({renderAll, visState, sel})

  return {loadFeature, renderFeature}

  async function renderFeature(scan, featureIndex, layerIdx){
    if (visState.hideStaleOutputs) sel.classed('is-stale-output', 1)
    if (featureIndex == visState.featureIndex) return
    // load feature data and exit early if featureIndex has changed
    visState.featureIndex = featureIndex
    var feature = await loadFeature(scan, featureIndex, layerIdx)
    if (feature.featureIndex == visState.featureIndex){
      visState.feature = feature
      renderAll.feature()
      if (visState.hideStaleOutputs) sel.classed('is-stale-output', 0)
    }

    return feature
  }

  // tracerflow: circuit-tracer fetches feature examples from huggingface.co (or a CloudFront
  // rewrite of ./features/). Here they come only from this server: a graph whose scan names a
  // feature pack the server lists (./features/index.json; a scan './features/NAME' or 'NAME')
  // reads it as circuit-tracer reads a Hub repo's features/ folder (index.json.gz, then one
  // Range request into the layer's .bin), all from the version the list named, so a run that
  // swaps in a grown pack meanwhile never mixes two versions; another './' scan tries
  // ${scan}/${id}.json quietly;
  // any other feature gets an empty record, and the list says there are no examples.

  function packList() {
    if (!packListPromise) {
      packListPromise = util.getFile('./features/index.json', false)
        .then(d => ({scans: d.scans || [], versions: d.versions || {}}))
        .catch(() => ({scans: [], versions: {}}))
    }
    return packListPromise
  }

  async function packDir(scan) {
    if (!scan) return null
    var name = scan.startsWith('./features/') ? scan.slice('./features/'.length) : scan
    var list = await packList()
    if (!list.scans.includes(name)) return null
    var version = list.versions[name]
    return version ? `./features/${name}/${version}` : `./features/${name}`
  }

  async function loadFeatureFromPack(dir, featureIndex) {
    const [layerIdx, featIdx] = util.cantorUnpair(featureIndex)
    if (!packIndexPromises.has(dir)) {
      packIndexPromises.set(dir, util.getFile(`${dir}/index.json.gz`, false))
    }
    const entry = (await packIndexPromises.get(dir))[layerIdx]
    if (!entry || !entry.filename || !entry.offsets) return null
    const startByte = entry.offsets[featIdx]
    const endByte = entry.offsets[featIdx + 1]
    if (!(endByte > startByte)) return null  // no dashboard computed for this feature
    return await util.getFile(`${dir}/${entry.filename}`, false, 'bin', `bytes=${startByte}-${endByte}`)
  }

  function loadFeature(scan, featureIndex){
    var key = `${scan}|${featureIndex}`
    if (!featurePromises.has(key)) featurePromises.set(key, fetchFeature(scan, featureIndex))
    return featurePromises.get(key)
  }

  async function fetchFeature(scan, featureIndex){
    var feature = null
    var dir = await packDir(scan)
    if (dir) {
      feature = await loadFeatureFromPack(dir, featureIndex).catch(error => {
        console.warn(`feature ${featureIndex} of ${scan}:`, error)
        return {isDead: true, examples_quantiles: [], top_logits: [], bottom_logits: []}
      })
    } else if (scan && scan.startsWith('./')) {
      feature = await util.getFile(`${scan}/${featureIndex}.json`).catch(() => null)
    }
    if (!feature) feature = {noExamples: true, examples_quantiles: [], top_logits: [], bottom_logits: []}

    if (feature.act_min === undefined) {
      feature.act_min = 0
      feature.act_max = 1.4
    }

    feature.colorScale = d3.scaleSequential(d3.interpolateOranges)
      .domain([feature.act_min, feature.act_max]).clamp(1)

    feature.featureIndex = featureIndex
    feature.scan = scan

    return feature
  }
}

window.init?.()
