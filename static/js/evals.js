// The comparison of two eval runs (evals/templates/evals/compare.html): cases per kind of
// change and the two pass rates, from the JSON in #compare-data. Every bar is labelled on its
// axis, so nothing depends on colour; the numbers are in the table under the charts.
(function () {
  "use strict";

  function draw() {
    var source = document.getElementById("compare-data");
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    bars("compare-kinds-chart", data.kinds.map(function (k) { return k.kind; }),
         data.kinds.map(function (k) { return k.cases; }), "Cases",
         data.kinds.map(function (k) { return /regression|failure/.test(k.kind) ? "#fca5a5" : /fixed|pass/.test(k.kind) ? "#86efac" : "#cbd5e1"; }),
         null);
    bars("compare-rates-chart", data.pass_rates.map(function (r) { return "run " + r.run; }),
         data.pass_rates.map(function (r) { return r.rate; }), "Pass rate", ["#93c5fd", "#1d4ed8"], 1);
  }

  function bars(id, labels, values, title, colors, max) {
    var holder = document.getElementById(id);
    if (!holder) return;
    var canvas = document.createElement("canvas");
    holder.appendChild(canvas);
    var y = { beginAtZero: true, title: { display: true, text: title } };
    if (max) {
      y.max = max;
      y.ticks = { callback: function (v) { return Math.round(v * 100) + "%"; } };
    }
    new Chart(canvas, {
      type: "bar",
      data: { labels: labels, datasets: [{ label: title, data: values, backgroundColor: colors, borderColor: "#374151", borderWidth: 1 }] },
      options: { maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } }, scales: { y: y } }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
