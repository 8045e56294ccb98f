// Draws the calibration page's two charts from the JSON the server put in #calibration-data.
// Series differ by line style and marker shape as well as colour, so they read without colour.
(function () {
  "use strict";

  function draw() {
    var source = document.getElementById("calibration-data");
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    reliability(data);
    riskCoverage(data);
    laneMix(data);
  }

  function canvasIn(id) {
    var holder = document.getElementById(id);
    if (!holder) return null;
    var canvas = document.createElement("canvas");
    holder.appendChild(canvas);
    return canvas;
  }

  function percentAxis(title) {
    return {
      min: 0, max: 1, title: { display: true, text: title },
      ticks: { callback: function (v) { return Math.round(v * 100) + "%"; } }
    };
  }

  function reliability(data) {
    var canvas = canvasIn("reliability-chart");
    if (!canvas) return;
    var bins = data.reliability.filter(function (b) { return b.count > 0; });
    new Chart(canvas, {
      type: "scatter",
      data: {
        datasets: [
          {
            label: "Drafts kept, per score bin",
            data: bins.map(function (b) { return { x: b.mean_score, y: b.good_rate, count: b.count }; }),
            borderColor: "#1d4ed8", backgroundColor: "#1d4ed8", pointStyle: "circle", pointRadius: 5,
            showLine: true
          },
          {
            label: "Perfect calibration",
            data: [{ x: 0, y: 0 }, { x: 1, y: 1 }],
            borderColor: "#6b7280", borderDash: [6, 4], pointRadius: 0, showLine: true
          }
        ]
      },
      options: {
        maintainAspectRatio: false, animation: false,
        scales: { x: percentAxis("Mean score"), y: percentAxis("Share kept without material change") },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var p = ctx.raw;
                return p.count === undefined ? ctx.dataset.label
                  : "score " + p.x.toFixed(2) + ": " + Math.round(p.y * 100) + "% kept of " + p.count;
              }
            }
          }
        }
      }
    });
  }

  function pointAt(curve, threshold) {
    if (threshold === null || threshold === undefined) return null;
    var found = null;
    curve.forEach(function (p) { if (p.threshold >= threshold) found = p; });
    return found;
  }

  function riskCoverage(data) {
    var canvas = canvasIn("risk-coverage-chart");
    if (!canvas) return;
    var curve = data.curve;
    var datasets = [
      {
        label: "Escape rate (observed)",
        data: curve.map(function (p) { return { x: p.coverage, y: p.risk }; }),
        borderColor: "#1d4ed8", backgroundColor: "#1d4ed8", pointRadius: 0, showLine: true
      },
      {
        label: "Escape rate, upper bound (95%)",
        data: curve.map(function (p) { return { x: p.coverage, y: p.risk_upper }; }),
        borderColor: "#b45309", backgroundColor: "#b45309", borderDash: [6, 4], pointRadius: 0, showLine: true
      },
      {
        label: "Target (" + (data.alpha * 100).toFixed(1) + "%)",
        data: [{ x: 0, y: data.alpha }, { x: 1, y: data.alpha }],
        borderColor: "#991b1b", borderDash: [2, 3], pointRadius: 0, showLine: true
      }
    ];
    var marks = [
      { threshold: data.recommended, label: "Recommended", style: "triangle", color: "#166534" },
      { threshold: data.current, label: "Current", style: "rectRot", color: "#111827" }
    ];
    marks.forEach(function (m) {
      var p = pointAt(curve, m.threshold);
      if (!p) return;
      datasets.push({
        label: m.label + " (" + m.threshold.toFixed(2) + ")",
        data: [{ x: p.coverage, y: p.risk_upper }],
        pointStyle: m.style, pointRadius: 9, borderColor: m.color, backgroundColor: m.color
      });
    });
    var top = Math.min(1, Math.max(data.alpha * 3, 0.05));
    new Chart(canvas, {
      type: "scatter",
      data: { datasets: datasets },
      options: {
        maintainAspectRatio: false, animation: false,
        scales: { x: percentAxis("Share auto-approved"), y: Object.assign(percentAxis("Escape rate"), { max: top }) },
        plugins: { legend: { labels: { usePointStyle: true } } }
      }
    });
  }

  // Stacked bars, one colour and one border style per lane, named in the legend and in order
  // (auto at the bottom, blocking on top), with the numbers in the table under the chart.
  function laneMix(data) {
    var canvas = canvasIn("lane-mix-chart");
    if (!canvas || !data.lane_mix.length) return;
    var lanes = [
      { key: "auto_approve", label: "Auto-approved", color: "#86efac", border: "#166534", dash: [] },
      { key: "async_review", label: "Async review", color: "#93c5fd", border: "#075985", dash: [4, 2] },
      { key: "blocking_review", label: "Blocking review", color: "#fca5a5", border: "#991b1b", dash: [1, 1] }
    ];
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.lane_mix.map(function (d) { return d.day; }),
        datasets: lanes.map(function (l) {
          return { label: l.label, data: data.lane_mix.map(function (d) { return d[l.key]; }),
                   backgroundColor: l.color, borderColor: l.border, borderWidth: 2, borderDash: l.dash };
        })
      },
      options: {
        maintainAspectRatio: false, animation: false,
        scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "Drafts" }, beginAtZero: true } }
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
