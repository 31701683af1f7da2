// The job page: draws the loss curves with Chart.js and, while the job is not finished,
// polls /dashboard/jobs/{id}/live.json for new events, metrics and checkpoints.
(function () {
  "use strict";
  const POLL_MS = 2000;
  const state = JSON.parse(document.getElementById("job-state").textContent);
  const jobId = state.job.id;
  let newest = state.newest_event_id;
  let points = state.points.slice();
  let events = state.events.slice();

  function series(name) {
    return points.filter((p) => p[name] !== undefined).map((p) => ({ x: p.step, y: p[name] }));
  }
  function lossAt(step) {
    let best = null;
    for (const p of points) {
      if (p.train_loss !== undefined && p.step <= step) best = p.train_loss;
    }
    return best;
  }
  function checkpointSeries(marks) {
    return marks.map((c) => ({ x: c.step, y: c.train_loss ?? lossAt(c.step), id: c.id }))
      .filter((p) => p.y !== null && p.y !== undefined);
  }

  const lossCanvas = document.getElementById("loss-chart");
  const lossChart = new Chart(lossCanvas, {
    type: "line",
    data: {
      datasets: [
        { label: "training loss", data: series("train_loss"), borderColor: "#3b5bdb", backgroundColor: "#3b5bdb", pointRadius: 0, borderWidth: 1.5 },
        { label: "validation loss", data: series("valid_loss"), borderColor: "#e67700", backgroundColor: "#e67700", pointRadius: 2, borderWidth: 1.5, spanGaps: true },
        { label: "full validation loss", data: series("full_valid_loss"), borderColor: "#2b8a3e", backgroundColor: "#2b8a3e", pointRadius: 3, showLine: false },
        { type: "scatter", label: "checkpoints", data: checkpointSeries(state.checkpoints), borderColor: "#c92a2a", backgroundColor: "#c92a2a", pointStyle: "triangle", pointRadius: 7 },
      ],
    },
    options: {
      animation: false, parsing: false, normalized: true, maintainAspectRatio: false,
      interaction: { mode: "nearest", intersect: false },
      scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: "loss" } } },
      plugins: { tooltip: { callbacks: { label: (ctx) => {
        const id = ctx.raw && ctx.raw.id ? " " + ctx.raw.id : "";
        return ctx.dataset.label + ": " + Number(ctx.parsed.y).toFixed(4) + id;
      } } } },
    },
  });
  let lrChart = null;

  function drawLearningRate() {
    const data = series("learning_rate");
    if (!data.length) return;
    document.getElementById("lr-card").hidden = false;
    if (!lrChart) {
      lrChart = new Chart(document.getElementById("lr-chart"), {
        type: "line",
        data: { datasets: [{ label: "learning rate", data: data, borderColor: "#7048e8", pointRadius: 0, borderWidth: 1.5 }] },
        options: { animation: false, parsing: false, maintainAspectRatio: false,
          scales: { x: { type: "linear", title: { display: true, text: "step" } } } },
      });
    } else {
      lrChart.data.datasets[0].data = data;
      lrChart.update("none");
    }
  }

  function text(id, value) {
    const node = document.getElementById(id);
    if (node) node.textContent = value === null || value === undefined ? "—" : String(value);
  }

  function drawFacts(job) {
    const status = document.getElementById("status");
    status.textContent = job.status;
    status.className = "status s-" + job.status;
    text("stage", job.stage);
    text("queue-position", job.queue_position);
    text("trained-tokens", job.trained_tokens);
    const last = points.length ? points[points.length - 1] : null;
    if (last) text("steps", last.total_steps ? last.step + " / " + last.total_steps : last.step);
  }

  function drawCheckpoints(marks) {
    const body = document.querySelector("#checkpoints tbody");
    body.replaceChildren(...marks.map((c) => {
      const row = document.createElement("tr");
      for (const value of [c.step, c.model, c.train_loss, c.valid_loss]) {
        const cell = document.createElement("td");
        cell.textContent = value === null || value === undefined ? "—" : String(value);
        row.appendChild(cell);
      }
      return row;
    }));
    lossChart.data.datasets[3].data = checkpointSeries(marks);
  }

  function drawEvents() {
    const body = document.querySelector("#events tbody");
    const rows = events.slice(-200).reverse().map((e) => {
      const row = document.createElement("tr");
      row.className = "level-" + e.level;
      const when = new Date(e.created_at * 1000).toISOString().replace("T", " ").slice(0, 19);
      for (const value of [when, e.level, e.message]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      return row;
    });
    body.replaceChildren(...rows);
  }

  function drawChart() {
    lossChart.data.datasets[0].data = series("train_loss");
    lossChart.data.datasets[1].data = series("valid_loss");
    lossChart.data.datasets[2].data = series("full_valid_loss");
    lossChart.update("none");
    lossCanvas.dataset.points = String(lossChart.data.datasets[0].data.length);
    document.getElementById("chart-empty").hidden = points.length > 0;
    drawLearningRate();
  }

  function apply(update) {
    if (update.reset) { points = []; events = []; }
    points = points.concat(update.points);
    events = events.concat(update.events);
    newest = update.newest_event_id;
    drawFacts(update.job);
    drawCheckpoints(update.checkpoints);
    drawChart();
    drawEvents();
  }

  async function poll() {
    const url = "/dashboard/jobs/" + encodeURIComponent(jobId) + "/live.json" + (newest ? "?known=" + encodeURIComponent(newest) : "");
    try {
      const answer = await fetch(url, { headers: { accept: "application/json" }, credentials: "same-origin" });
      if (answer.status === 401) { window.location.reload(); return; }  // shows the sign-in page
      if (answer.ok) {
        const update = await answer.json();
        apply(update);
        if (update.terminal) { document.body.dataset.live = "done"; return; }
      }
    } catch (error) {
      // A dropped connection: try again at the next tick.
    }
    window.setTimeout(poll, POLL_MS);
  }

  drawFacts(state.job);
  drawCheckpoints(state.checkpoints);
  drawChart();
  drawEvents();
  if (!state.terminal) {
    document.body.dataset.live = "polling";
    window.setTimeout(poll, POLL_MS);
  } else {
    document.body.dataset.live = "done";
  }
})();
