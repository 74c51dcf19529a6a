// onflame report: the gallery's sorting and filtering. Plain JavaScript, no library, no network.
// State can be given in the address's fragment, e.g. index.html#verdict=failed,suspect&sort=scan_to_mesh_p95_mm&dir=desc
"use strict";
(function () {
  var grid = document.getElementById("gallery");
  if (!grid) { return; }
  var cards = Array.prototype.slice.call(grid.querySelectorAll(".card"));
  var sortKey = document.getElementById("sort-key");
  var sortDir = document.getElementById("sort-dir");
  var shown = document.getElementById("shown");
  var flaggedOnly = document.getElementById("flagged-only");
  var verdictBoxes = Array.prototype.slice.call(document.querySelectorAll("#verdict-filter input[type=checkbox]"));
  var rangeInputs = Array.prototype.slice.call(document.querySelectorAll("input[data-min], input[data-max]"));

  function attr(key) { return "data-" + key.replace(/_/g, "-"); }

  function value(card, key) {
    var v = card.getAttribute(attr(key));
    return v === null || v === "" ? NaN : parseFloat(v);
  }

  function byName(a, b) {
    var x = a.getAttribute("data-name"), y = b.getAttribute("data-name");
    return x < y ? -1 : x > y ? 1 : 0;
  }

  function compare(key, dir) {
    return function (a, b) {
      if (key === "name") { return dir * byName(a, b); }
      var x = value(a, key), y = value(b, key);
      var xm = isNaN(x), ym = isNaN(y);
      if (xm || ym) { return xm === ym ? byName(a, b) : (xm ? 1 : -1); }  // unknown values last, either way
      return x === y ? byName(a, b) : dir * (x - y);
    };
  }

  function visible(card) {
    var verdict = card.getAttribute("data-verdict");
    var allowed = verdictBoxes.some(function (box) { return box.checked && box.value === verdict; });
    if (!allowed) { return false; }
    if (flaggedOnly && flaggedOnly.checked && card.getAttribute("data-flagged") !== "1") { return false; }
    return rangeInputs.every(function (input) {
      if (input.value === "") { return true; }
      var limit = parseFloat(input.value);
      if (isNaN(limit)) { return true; }
      var key = input.getAttribute("data-min") || input.getAttribute("data-max");
      var v = value(card, key);
      if (isNaN(v)) { return false; }  // a range asks for a known value
      return input.hasAttribute("data-min") ? v >= limit : v <= limit;
    });
  }

  function apply() {
    var dir = sortDir.value === "desc" ? -1 : 1;
    var order = cards.slice().sort(compare(sortKey.value, dir));
    var n = 0;
    order.forEach(function (card) {
      var show = visible(card);
      card.hidden = !show;
      if (show) { n += 1; }
      grid.appendChild(card);  // moving a node keeps it; the last appended ends last
    });
    shown.textContent = n + " of " + cards.length + " shown";
  }

  function fromFragment() {
    var hash = window.location.hash.replace(/^#/, "");
    if (!hash) { return; }
    hash.split("&").forEach(function (part) {
      var kv = part.split("="), k = decodeURIComponent(kv[0]), v = decodeURIComponent(kv[1] || "");
      if (k === "verdict") {
        var wanted = v.split(",");
        verdictBoxes.forEach(function (box) { box.checked = wanted.indexOf(box.value) >= 0; });
      } else if (k === "sort" && Array.prototype.some.call(sortKey.options, function (o) { return o.value === v; })) {
        sortKey.value = v;
      } else if (k === "dir" && (v === "asc" || v === "desc")) {
        sortDir.value = v;
      } else if (k === "flagged" && flaggedOnly) {
        flaggedOnly.checked = v === "1";
      }
    });
  }

  function reset() {
    verdictBoxes.forEach(function (box) { box.checked = true; });
    rangeInputs.forEach(function (input) { input.value = ""; });
    if (flaggedOnly) { flaggedOnly.checked = false; }
    sortKey.value = "name";
    sortDir.value = "asc";
    apply();
  }

  [sortKey, sortDir, flaggedOnly].concat(verdictBoxes).forEach(function (el) {
    if (el) { el.addEventListener("change", apply); }
  });
  rangeInputs.forEach(function (input) { input.addEventListener("input", apply); });
  document.getElementById("reset").addEventListener("click", reset);
  window.addEventListener("hashchange", function () { fromFragment(); apply(); });
  fromFragment();
  apply();
}());
