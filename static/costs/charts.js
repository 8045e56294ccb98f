// Draws every chart on a cost page from its JSON block (json_script), so the page needs no
// inline script or style attribute (a Content-Security-Policy without 'unsafe-inline').
// Each <canvas data-chart="ID"> reads <script type="application/json" id="ID">.
(function () {
  "use strict";
  var palette = ["#2f5bd3", "#1e8e5a", "#b7791f", "#c53030", "#6b46c1", "#0987a0", "#718096", "#d53f8c"];

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") { return; }
    var spec = JSON.parse(source.textContent);
    var datasets = spec.datasets.map(function (d, i) {
      var colour = palette[i % palette.length];
      return { label: d.label, data: d.data, backgroundColor: colour, borderColor: colour, borderWidth: 1.5,
               tension: 0.2, spanGaps: true };
    });
    new Chart(canvas, {
      type: spec.type || "bar",
      data: { labels: spec.labels, datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { position: "bottom" } },
        scales: { x: { stacked: !!spec.stacked }, y: { stacked: !!spec.stacked, beginAtZero: true } }
      }
    });
  }

  function init() {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
