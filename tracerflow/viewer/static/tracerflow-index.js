// tracerflow index and feature pages: sort each table.sortable by the clicked column (click
// again to reverse). Cells carry their sort value in data-sort; number columns sort
// numerically, blanks last.
document.querySelectorAll('table.sortable').forEach(function (table) {
  'use strict'
  var headers = Array.from(table.querySelectorAll('thead th'))
  var tbody = table.querySelector('tbody')

  function sortBy(index) {
    var th = headers[index]
    var ascending = th.getAttribute('aria-sort') !== 'ascending'
    var isNumber = th.dataset.type === 'number'
    var rows = Array.from(tbody.rows)
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.sort
      var y = b.cells[index].dataset.sort
      if (x === '' && y === '') return 0
      if (x === '') return 1
      if (y === '') return -1
      var order = isNumber ? parseFloat(x) - parseFloat(y) : x.localeCompare(y)
      return ascending ? order : -order
    })
    rows.forEach(function (row) { tbody.appendChild(row) })
    headers.forEach(function (h) { h.removeAttribute('aria-sort') })
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending')
  }

  headers.forEach(function (th, index) {
    th.addEventListener('click', function () { sortBy(index) })
    th.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' || ev.key === ' ') sortBy(index)
    })
  })
})
