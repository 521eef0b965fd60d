// jetpack-lite: the small part of the d3-jetpack API that the circuit-tracer viewer uses,
// written for d3 v7 (d3-jetpack 2.x itself breaks on d3 v7, and the transformer-circuits.pub
// build `jetpack_2024-07-20.js` is not published on npm). The behaviour follows d3-jetpack
// (BSD-3-Clause, Gregor Aisch and Adam Pearce; see LICENSE-d3-jetpack); the code is our own.
//
// Provides: selection.append('tag.class#id'), .appendMany, .at, .st, .translate,
// .selectAppend, .parent; d3.conventions (svg/canvas/div layers), d3.nestBy, d3.clamp,
// d3.attachTooltip.
(function (d3) {
  'use strict'
  if (!d3) throw new Error('jetpack-lite needs d3 loaded first')

  var proto = d3.selection.prototype
  var transitionProto = d3.transition ? d3.transition.prototype : null
  var d3Append = proto.append
  var d3Insert = proto.insert

  // 'div.a.b#c' -> {tag: 'div', attrs: {class: 'a b', id: 'c'}}
  function parseTagName(name) {
    var parts = name.split(/([.#])/g)
    var tag = parts.shift()
    var attrs = {}
    while (parts.length) {
      var sep = parts.shift()
      var value = parts.shift()
      if (sep === '.') attrs['class'] = attrs['class'] ? attrs['class'] + ' ' + value : value
      else if (sep === '#') attrs.id = value
    }
    return {tag: tag, attrs: attrs}
  }

  function setAttrs(sel, attrs) {
    for (var key in attrs) sel.attr(key, attrs[key])
    return sel
  }

  proto.append = function (name) {
    if (typeof name !== 'string') return d3Append.call(this, name)
    var parsed = parseTagName(name)
    return setAttrs(d3Append.call(this, parsed.tag), parsed.attrs)
  }

  proto.insert = function (name, before) {
    if (typeof name !== 'string') return d3Insert.call(this, name, before)
    var parsed = parseTagName(name)
    return setAttrs(d3Insert.call(this, parsed.tag, before), parsed.attrs)
  }

  proto.appendMany = function (name, data) {
    return this.selectAll(null).data(data).enter().append(name)
  }

  // SVG attributes that keep their camelCase; every other camelCase key becomes kebab-case.
  var camelCaseAttrs = /^(allowReorder|attributeName|attributeType|autoReverse|baseFrequency|baseProfile|calcMode|clipPathUnits|diffuseConstant|edgeMode|filterUnits|gradientTransform|gradientUnits|kernelMatrix|kernelUnitLength|keyPoints|keySplines|keyTimes|lengthAdjust|limitingConeAngle|markerHeight|markerUnits|markerWidth|maskContentUnits|maskUnits|numOctaves|pathLength|patternContentUnits|patternTransform|patternUnits|pointsAtX|pointsAtY|pointsAtZ|preserveAlpha|preserveAspectRatio|primitiveUnits|refX|refY|repeatCount|repeatDur|specularConstant|specularExponent|spreadMethod|startOffset|stdDeviation|stitchTiles|surfaceScale|systemLanguage|tableValues|targetX|targetY|textLength|viewBox|xChannelSelector|yChannelSelector|zoomAndPan)$/

  function kebab(key) {
    return key.replace(/([a-z\d])([A-Z])/g, '$1-$2').toLowerCase()
  }

  function at(name, value) {
    if (typeof name === 'object') {
      for (var key in name) this.attr(camelCaseAttrs.test(key) ? key : kebab(key), name[key])
      return this
    }
    return arguments.length === 1 ? this.attr(name) : this.attr(name, value)
  }

  // Styles given as bare numbers get 'px', as in d3-jetpack.
  var pxStyles = new Set(('top left bottom right width height font-size line-height stroke-width ' +
    'margin margin-top margin-left margin-bottom margin-right padding padding-top padding-left ' +
    'padding-bottom padding-right border border-radius border-width max-width min-width ' +
    'max-height min-height').split(' '))

  function addPx(value) {
    return typeof value === 'number' ? value + 'px' : value
  }

  function st(name, value) {
    var sel = this
    function setStyle(key, val) {
      var style = kebab(key)
      if (!pxStyles.has(style)) return sel.style(style, val)
      var px = typeof val === 'function' ? function () { return addPx(val.apply(this, arguments)) } : addPx(val)
      return sel.style(style, px)
    }
    if (typeof name === 'object') {
      for (var key in name) setStyle(key, name[key])
      return this
    }
    return arguments.length === 1 ? this.style(name) : setStyle(name, value)
  }

  // translate([x, y]) or translate(fn); translate(v, 0) is [v, 0], translate(v, 1) is [0, v].
  // SVG elements get a transform attribute, HTML elements a CSS transform.
  function translate(xy, dim) {
    var node = this.node()
    if (!node) return this
    function point(d, i, self) {
      var p = typeof xy === 'function' ? xy.call(self, d, i) : xy
      if (dim === 0) p = [p, 0]
      else if (dim === 1) p = [0, p]
      return p
    }
    if (node.getBBox) {
      return this.attr('transform', function (d, i) {
        var p = point(d, i, this)
        return 'translate(' + p[0] + ',' + p[1] + ')'
      })
    }
    return this.style('transform', function (d, i) {
      var p = point(d, i, this)
      return 'translate(' + p[0] + 'px,' + p[1] + 'px)'
    })
  }

  proto.at = at
  proto.st = st
  proto.translate = translate
  if (transitionProto) {
    transitionProto.at = at
    transitionProto.st = st
    transitionProto.translate = translate
  }

  proto.selectAppend = function (name) {
    var parsed = parseTagName(name)
    var sel = this.select(function () {
      return this.querySelector(name) || this.appendChild(d3.creator(parsed.tag).apply(this, arguments))
    })
    return setAttrs(sel, parsed.attrs)
  }

  // The distinct parents of the selected nodes, in order.
  proto.parent = function () {
    var seen = []
    return this.filter(function () {
      if (seen.indexOf(this.parentNode) > -1) return false
      seen.push(this.parentNode)
      return true
    }).select(function () { return this.parentNode })
  }

  d3.clamp = function (min, value, max) {
    return Math.max(min, Math.min(max, value))
  }

  // Groups in first-seen order; each group is an array with a string `key`, as d3.nest made them.
  d3.nestBy = function (array, keyFn) {
    var groups = new Map()
    Array.from(array).forEach(function (d, i) {
      var key = String(keyFn(d, i))
      if (!groups.has(key)) {
        var group = []
        group.key = key
        groups.set(key, group)
      }
      groups.get(key).push(d)
    })
    return Array.from(groups.values())
  }

  d3.conventions = function (c) {
    c = c || {}
    c.margin = c.margin || {}
    ;['top', 'right', 'bottom', 'left'].forEach(function (side) {
      if (!c.margin[side] && c.margin[side] !== 0) c.margin[side] = 20
    })

    var node = c.sel && c.sel.node()
    c.totalWidth = c.totalWidth || (node && node.offsetWidth) || 960
    c.totalHeight = c.totalHeight || (node && node.offsetHeight) || 500
    c.width = c.width || c.totalWidth - c.margin.left - c.margin.right
    c.height = c.height || c.totalHeight - c.margin.top - c.margin.bottom
    c.totalWidth = c.width + c.margin.left + c.margin.right
    c.totalHeight = c.height + c.margin.top + c.margin.bottom

    c.sel = c.sel || d3.select('body')
    c.sel.st({position: 'relative', height: c.totalHeight, width: c.totalWidth})

    c.x = c.x || d3.scaleLinear().range([0, c.width])
    c.y = c.y || d3.scaleLinear().range([c.height, 0])
    c.xAxis = c.xAxis || d3.axisBottom().scale(c.x)
    c.yAxis = c.yAxis || d3.axisLeft().scale(c.y)

    var hasLayers = !!c.layers
    c.layers = (c.layers || 's').split('').map(function (type) {
      if (type === 's') {
        var svg = c.sel.append('svg')
          .st({position: hasLayers ? 'absolute' : ''})
          .attr('width', c.totalWidth)
          .attr('height', c.totalHeight)
          .append('g')
          .attr('transform', 'translate(' + c.margin.left + ',' + c.margin.top + ')')
        if (!c.svg) c.svg = svg // the lowest svg layer is the default
        return svg
      }
      if (type === 'c') {
        var scale = window.devicePixelRatio || 1
        var ctx = c.sel.append('canvas')
          .at({width: c.totalWidth * scale, height: c.totalHeight * scale})
          .st({width: c.totalWidth, height: c.totalHeight, position: 'absolute'})
          .node().getContext('2d')
        ctx.scale(scale, scale)
        ctx.translate(c.margin.left, c.margin.top)
        return ctx
      }
      if (type === 'd') {
        return c.sel.append('div').st({
          position: 'absolute', left: c.margin.left, top: c.margin.top,
          width: c.width, height: c.height,
        })
      }
      throw new Error('d3.conventions: unknown layer type ' + type)
    })

    // Into `svg` when given (the link graph draws its axes on its bottom layer, then removes
    // the x axis and the y tick lines there), else into c.svg: as d3-jetpack does.
    c.drawAxis = function (svg) {
      svg = svg || c.svg
      var xAxisSel = svg.append('g').attr('class', 'x axis')
        .attr('transform', 'translate(0,' + c.height + ')').call(c.xAxis)
      var yAxisSel = svg.append('g').attr('class', 'y axis').call(c.yAxis)
      return {xAxisSel: xAxisSel, yAxisSel: yAxisSel}
    }
    return c
  }

  // Shows a tooltip of `fieldFns(d)` lines (default: every scalar field) on hover.
  d3.attachTooltip = function (sel, tooltipSel, fieldFns) {
    if (!sel.size()) return
    tooltipSel = tooltipSel || d3.select('.tooltip')
    var datum = sel.datum() || {}
    fieldFns = fieldFns || Object.keys(datum)
      .filter(function (key) { return typeof datum[key] !== 'object' })
      .map(function (key) { return function (d) { return key + ': <b>' + d[key] + '</b>' } })

    sel
      .on('mouseover.attachTooltip', function (ev, d) {
        tooltipSel.classed('tooltip-hidden', false).html('')
          .appendMany('div', fieldFns).html(function (fn) { return fn(d) })
        d3.select(this).classed('tooltipped', true)
      })
      .on('mousemove.attachTooltip', function (ev) {
        if (!tooltipSel.size()) return
        var bb = tooltipSel.node().getBoundingClientRect()
        var left = d3.clamp(20, ev.clientX - bb.width / 2, window.innerWidth - bb.width - 20)
        var top = window.innerHeight > ev.clientY + 20 + bb.height ? ev.clientY + 20 : ev.clientY - bb.height - 20
        tooltipSel.style('left', left + 'px').style('top', top + 'px')
      })
      .on('mouseout.attachTooltip', function () {
        tooltipSel.classed('tooltip-hidden', true)
        d3.selectAll('.tooltipped').classed('tooltipped', false)
      })
  }
})(window.d3)
