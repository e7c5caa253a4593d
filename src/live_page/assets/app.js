// The iotload live page: listens to /events (server-sent events) and draws each second's
// sample with uPlot; shows the final summary when the run ends.
"use strict";

(function () {
  const KEEP = 900; // samples, as many as the server keeps
  const $ = (id) => document.getElementById(id);
  const int = (n) => (n === undefined || n === null ? "–" : Math.round(n).toLocaleString("en-US"));
  const ms = (n) => (n === undefined || n === null ? "–" : n.toFixed(3) + " ms");
  const rate = (n) => (n === undefined || n === null ? "–" : n.toFixed(1));

  // Column arrays for the charts: x (seconds), then one array per series.
  const latency = [[], [], [], [], [], []]; // t, p50, p90, p99, p99.9, max
  const rates = [[], [], []]; // t, sent/s, received/s
  let latencyChart = null;
  let rateChart = null;
  let samplesSeen = 0;
  let finished = false;
  const sides = new Set();

  function setState(state, text) {
    document.body.dataset.state = state;
    $("status").textContent = text;
  }

  function chartWidth(el) {
    return Math.max(320, el.parentElement.clientWidth - 24);
  }

  function makeCharts() {
    const latencyEl = $("chart-latency");
    latencyChart = new uPlot(
      {
        width: chartWidth(latencyEl),
        height: 260,
        scales: { x: { time: false } },
        axes: [{ label: "seconds" }, { label: "ms" }],
        series: [
          { label: "s" },
          { label: "p50", stroke: "#2a7ab0", width: 1.5 },
          { label: "p90", stroke: "#3fa34d", width: 1.5 },
          { label: "p99", stroke: "#e08a00", width: 1.5 },
          { label: "p99.9", stroke: "#c0392b", width: 1.5 },
          { label: "max", stroke: "#8e44ad", width: 1, dash: [4, 4] },
        ],
      },
      latency,
      latencyEl,
    );
    const rateEl = $("chart-rate");
    rateChart = new uPlot(
      {
        width: chartWidth(rateEl),
        height: 200,
        scales: { x: { time: false } },
        axes: [{ label: "seconds" }, { label: "msg/s" }],
        series: [
          { label: "s" },
          { label: "sent/s", stroke: "#2a7ab0", width: 1.5 },
          { label: "received/s", stroke: "#3fa34d", width: 1.5 },
        ],
      },
      rates,
      rateEl,
    );
    window.addEventListener("resize", () => {
      latencyChart.setSize({ width: chartWidth(latencyEl), height: 260 });
      rateChart.setSize({ width: chartWidth(rateEl), height: 200 });
    });
  }

  function push(columns, values) {
    columns.forEach((c, i) => {
      c.push(values[i]);
      if (c.length > KEEP) c.shift();
    });
  }

  function showSides() {
    document.querySelectorAll("[data-side]").forEach((el) => {
      el.classList.toggle("absent", !sides.has(el.dataset.side));
    });
  }

  function addSample(s) {
    samplesSeen += 1;
    for (const side of ["load", "echo", "receive"]) if (s[side]) sides.add(side);
    const r = s.receive;
    const l = s.load;
    // A page fed from a results store has no device counts or send lag.
    if (l && l.devices !== null) sides.add("devices");
    if (r) push(latency, [s.t, r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms]);
    push(rates, [s.t, l ? l.sent_per_s : null, r ? r.received_per_s : null]);
    if (finished) return;
    if (l) {
      $("tile-connected").textContent = int(l.connected) + " / " + int(l.devices);
      $("tile-sent").textContent = int(l.sent);
      $("tile-sent-rate").textContent = rate(l.sent_per_s);
      $("tile-send-lag").textContent = ms(l.send_lag_ms);
    }
    if (s.echo) $("tile-echoed").textContent = int(s.echo.published);
    if (r) {
      $("tile-received").textContent = int(r.unique);
      $("tile-received-rate").textContent = int(r.received_per_s);
      $("tile-lost").textContent = int(r.open_gaps);
      $("tile-duplicates").textContent = int(r.duplicates);
      $("tile-reordered").textContent = int(r.reordered);
      $("tile-p50").textContent = ms(r.total_p50_ms);
      $("tile-p99").textContent = ms(r.total_p99_ms);
      $("tile-max").textContent = ms(r.total_max_ms);
    }
  }

  function redraw() {
    showSides();
    latencyChart.setData(latency);
    rateChart.setData(rates);
  }

  function showSummary(summary) {
    finished = true;
    const l = summary.load;
    const r = summary.receive;
    if (l) {
      $("tile-connected").textContent = int(l.connected) + " / " + int(l.devices);
      $("tile-sent").textContent = int(l.sent);
      $("tile-sent-rate").textContent = rate(l.sent_per_s);
      $("tile-send-lag").textContent = ms(l.send_lag_ms.p99) + " p99";
    }
    if (summary.echo) $("tile-echoed").textContent = int(summary.echo.published);
    if (r) {
      $("tile-received").textContent = int(r.unique);
      $("tile-received-rate").textContent = rate(r.received_per_s);
      $("tile-lost").textContent = int(r.lost);
      $("tile-duplicates").textContent = int(r.duplicates);
      $("tile-reordered").textContent = int(r.reordered);
      $("tile-p50").textContent = ms(r.latency_ms.p50);
      $("tile-p99").textContent = ms(r.latency_ms.p99);
      $("tile-max").textContent = ms(r.latency_ms.max);
    }
    $("tiles-note").textContent = "Final summary of the run (rates over the whole run, send lag p99).";
    const results = summary.thresholds || [];
    if (results.length > 0) {
      const body = $("thresholds").tBodies[0];
      body.replaceChildren();
      for (const t of results) {
        const row = body.insertRow();
        row.insertCell().textContent = t.threshold;
        row.insertCell().textContent = t.value === null ? "nothing measured" : t.value.toFixed(3) + " " + t.unit;
        const verdict = row.insertCell();
        verdict.textContent = t.passed ? "pass" : "FAIL";
        verdict.className = t.passed ? "pass" : "fail";
        row.dataset.passed = String(t.passed);
      }
      $("thresholds-section").hidden = false;
    }
    $("summary-json").textContent = JSON.stringify(summary, null, 2);
    $("summary-section").hidden = false;
    const failed = results.filter((t) => !t.passed).length;
    let text = "finished in " + summary.elapsed_s.toFixed(1) + " s";
    if (summary.interrupted) text += " (interrupted)";
    if (results.length > 0) text += failed ? " · " + failed + " threshold(s) FAILED" : " · thresholds passed";
    setState("finished", text);
    window.iotloadPage.summary = summary;
  }

  // A page fed from a results store (`iotload plotter --ui`): what the store holds now.
  function showStoreState(store) {
    const states = {
      waiting: ["waiting", "waiting for a run in " + store.url],
      recording: ["live", "recording: read from " + store.url + " each second"],
      ended: ["ended", "run ended: the stored numbers are final"],
    };
    const [state, text] = states[store.state] || ["live", store.state];
    setState(state, store.problem ? text + " · cannot read the store: " + store.problem : text);
    $("tiles-note").textContent =
      "Totals stored for this run by all its instances; latency over the whole run at the store's precision (2 significant figures).";
  }

  function showInfo(info) {
    $("component").textContent = info.component;
    let about = [info.broker, info.store ? info.store.url : ""].filter((s) => s).join(" · ");
    if (info.run_id) about += " · run " + info.run_id;
    about += " · iotload " + info.version;
    $("about").textContent = about;
    window.iotloadPage.info = info;
    if (info.store) showStoreState(info.store);
    else setState("live", "live");
    if (info.thresholds.length > 0) {
      const body = $("thresholds").tBodies[0];
      body.replaceChildren();
      for (const t of info.thresholds) {
        const row = body.insertRow();
        row.insertCell().textContent = t;
        row.insertCell().textContent = "–";
        row.insertCell().textContent = "checked at the end";
      }
      $("thresholds-section").hidden = false;
    }
  }

  // Per-topic detail: asked for once a second while the section is open.
  let topicsTimer = null;
  async function loadTopics() {
    try {
      const rows = await (await fetch("/api/topics")).json();
      const body = $("topic-rows");
      body.replaceChildren();
      for (const t of rows) {
        const row = body.insertRow();
        row.insertCell().textContent = t.topic;
        row.insertCell().textContent = int(t.received);
        for (const v of [t.p50_ms, t.p99_ms, t.max_ms, t.corrected_p99_ms]) row.insertCell().textContent = v.toFixed(3);
      }
      $("topics-note").textContent = rows.length + " topics; computed while this section is open.";
    } catch (e) {
      $("topics-note").textContent = "per-topic detail unavailable: " + e;
    }
  }
  $("topics").addEventListener("toggle", () => {
    clearInterval(topicsTimer);
    if ($("topics").open && !finished) {
      loadTopics();
      topicsTimer = setInterval(loadTopics, 1000);
    }
  });

  window.iotloadPage = {
    points: () => latency[0].length,
    rates: () => rates[0].length,
    samples: () => samplesSeen,
    summary: null,
    info: null,
  };

  makeCharts();
  const events = new EventSource("/events");
  events.addEventListener("info", (e) => showInfo(JSON.parse(e.data)));
  events.addEventListener("history", (e) => {
    // A reconnect sends the whole history again: start over from it.
    for (const c of latency.concat(rates)) c.length = 0;
    samplesSeen = 0;
    for (const s of JSON.parse(e.data)) addSample(s);
    redraw();
  });
  events.addEventListener("tail", (e) => {
    // Samples from some second on (a store's last seconds change as writers flush):
    // they replace what the charts have from that second.
    const tail = JSON.parse(e.data);
    if (tail.length > 0) {
      for (const columns of [latency, rates]) {
        const from = columns[0].findIndex((t) => t >= tail[0].t);
        if (from >= 0) for (const c of columns) c.length = from;
      }
      samplesSeen = rates[0].length;
    }
    for (const s of tail) addSample(s);
    redraw();
  });
  events.addEventListener("sample", (e) => {
    addSample(JSON.parse(e.data));
    redraw();
  });
  events.addEventListener("summary", (e) => {
    events.close();
    clearInterval(topicsTimer);
    showSummary(JSON.parse(e.data));
  });
  events.onerror = () => {
    if (!finished) setState("disconnected", "disconnected: the run may have ended; the charts keep what they got");
  };
})();
