// The evaluation page: one bar per model for the gate criterion (pass rate and mean score).
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("evaluation-chart").textContent);
  const canvas = document.getElementById("scores-chart");
  if (!canvas || !data.bars.length) return;
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: data.bars.map((b) => b.role),
      datasets: [
        { label: "pass rate", data: data.bars.map((b) => b.pass_rate), backgroundColor: "#3b5bdb" },
        { label: "mean score", data: data.bars.map((b) => b.mean_score), backgroundColor: "#e67700" },
      ],
    },
    options: { animation: false, maintainAspectRatio: false, scales: { y: { min: 0, max: 1 } } },
  });
})();
