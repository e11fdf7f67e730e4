// thanthien console: live refresh by small fetch() polls, TTS preview, charts. No framework.
"use strict";
(function () {
  function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = text; if (cls) e.className = cls; return e; }
  function ago(ms) {
    if (!ms) return "chưa bao giờ";
    const s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
    if (s < 60) return s + " giây trước";
    if (s < 3600) return Math.floor(s / 60) + " phút trước";
    if (s < 86400) return Math.floor(s / 3600) + " giờ trước";
    return Math.floor(s / 86400) + " ngày trước";
  }
  function when(ms) {
    if (!ms) return "—";
    const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + " " + p(d.getDate()) + "/" + p(d.getMonth() + 1) + "/" + d.getFullYear();
  }
  function cell(label, content) { const td = el("td"); td.dataset.label = label; if (content instanceof Node) td.appendChild(content); else td.textContent = content; return td; }
  function status(online) { const f = document.createDocumentFragment(); f.appendChild(el("span", null, "dot " + (online ? "ok" : "bad"))); f.appendChild(document.createTextNode(online ? "Kết nối" : "Mất kết nối")); return f; }

  // --- dashboard -------------------------------------------------------------------------
  function renderNodes(data) {
    const tbody = document.querySelector("#nodes tbody");
    if (!tbody) return;
    for (const k in data.summary) { const n = document.querySelector('#stats [data-k="' + k + '"]'); if (n) n.textContent = data.summary[k]; }
    const rows = document.createDocumentFragment();
    for (const n of data.nodes) {
      const tr = el("tr"); tr.dataset.id = n.id; if (!n.online) tr.className = "offline";
      const name = document.createDocumentFragment(); const a = el("a", n.name); a.href = "/devices/" + encodeURIComponent(n.id); name.appendChild(a); name.appendChild(el("br")); name.appendChild(el("span", n.id, "muted small"));
      tr.appendChild(cell("Loa", name));
      tr.appendChild(cell("Tổ", n.groups.join(", ") || "—"));
      tr.appendChild(cell("Trạng thái", status(n.online)));
      const seen = cell("Lần cuối", ago(n.last_seen)); seen.title = when(n.last_seen); tr.appendChild(seen);
      tr.appendChild(cell("Đang phát", n.now_playing || "—"));
      tr.appendChild(cell("Âm lượng", String(n.volume)));
      const docs = document.createDocumentFragment();
      if (!n.documents.length) docs.appendChild(document.createTextNode("—"));
      for (const d of n.documents) { docs.appendChild(el("span", d.target.split("/")[1] + ": " + d.held + "/" + d.current, "doc " + (d.held >= d.current ? "ok" : "stale"))); docs.appendChild(document.createTextNode(" ")); }
      tr.appendChild(cell("Lịch", docs));
      const al = document.createDocumentFragment();
      if (!n.alerts.length) al.appendChild(el("span", "—", "muted"));
      for (const x of n.alerts) { al.appendChild(el("span", x, "alert")); al.appendChild(document.createTextNode(" ")); }
      tr.appendChild(cell("Cảnh báo", al));
      rows.appendChild(tr);
    }
    if (!data.nodes.length) {
      const tr = el("tr"), td = el("td", data.summary.devices ? "Không có loa nào khớp bộ lọc." : "Chưa có loa nào.");
      td.colSpan = 8; tr.appendChild(td); rows.appendChild(tr);
    }
    tbody.replaceChildren(rows);
    const u = document.getElementById("updated"); if (u) u.textContent = "cập nhật lúc " + when(data.time_ms);
  }
  function poll(url, every, render) {
    let timer = null;
    async function tick() {
      try {
        const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
        if (r.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname); return; }
        if (r.ok) render(await r.json());
      } catch (e) { /* station busy or restarting: try again next tick */ }
      timer = setTimeout(tick, every);
    }
    timer = setTimeout(tick, every);
  }
  const stats = document.getElementById("stats");
  if (stats && stats.dataset.poll) poll(stats.dataset.poll, 5000, renderNodes);

  // --- emergency live --------------------------------------------------------------------
  const em = document.getElementById("em-stats");
  if (em) poll(em.dataset.pollEmergency, 2000, function (d) {
    for (const k of ["targeted", "acked", "started", "finished"]) { const n = em.querySelector('[data-k="' + k + '"]'); if (n) n.textContent = d[k]; }
    const tbody = document.querySelector("#em-devices tbody"); const rows = document.createDocumentFragment();
    for (const x of d.devices) { const tr = el("tr"); tr.dataset.id = x.device_id; tr.className = "st-" + x.state;
      tr.appendChild(cell("Loa", x.device_id)); tr.appendChild(cell("Trạng thái", x.label)); tr.appendChild(cell("Xác nhận", when(x.ack_at))); tr.appendChild(cell("Bắt đầu", when(x.started_at))); rows.appendChild(tr); }
    tbody.replaceChildren(rows);
  });

  // --- TTS preview -----------------------------------------------------------------------
  const pv = document.getElementById("tts-preview");
  if (pv) pv.addEventListener("click", async function () {
    const text = document.getElementById("bulletin-text").value, st = document.getElementById("tts-status"), audio = document.getElementById("tts-audio");
    if (!text.trim()) { st.textContent = "Hãy nhập nội dung trước."; return; }
    st.textContent = "Đang tạo giọng đọc…"; pv.disabled = true;
    try {
      const body = new FormData(); body.append("csrf", pv.dataset.csrf); body.append("text", text);
      const r = await fetch("/bulletins/preview", { method: "POST", body: body, credentials: "same-origin" });
      if (!r.ok) { st.textContent = await r.text(); return; }
      const blob = await r.blob(); audio.src = URL.createObjectURL(blob); audio.hidden = false; audio.play().catch(function () {});
      st.textContent = r.headers.get("X-TTS-Fallback") === "1" ? "Giọng đọc dự phòng (espeak-ng) vì không kết nối được Google." : "Đã tạo giọng đọc.";
    } catch (e) { st.textContent = "Không kết nối được trạm."; }
    finally { pv.disabled = false; }
  });

  // --- printing --------------------------------------------------------------------------
  const pb = document.getElementById("print-button"); if (pb) pb.addEventListener("click", function () { window.print(); });

  // --- charts (Chart.js, vendored) -------------------------------------------------------
  window.addEventListener("load", function () {
    if (typeof Chart === "undefined") return;
    Chart.defaults.animation = false;
    const colors = { played: "#1a7f37", partial: "#e0a800", failed: "#c62828", missed: "#8e24aa", interrupted: "#ef6c00", not_reported: "#90a4ae" };
    const names = { played: "Phát trọn", partial: "Một phần", failed: "Lỗi", missed: "Bỏ lỡ", interrupted: "Bị ngắt", not_reported: "Chưa báo cáo" };
    const dataEl = document.getElementById("chart-data");
    if (dataEl) {
      const data = JSON.parse(dataEl.textContent);
      const c1 = document.getElementById("plays-chart");
      if (c1) new Chart(c1, { type: "bar", data: { labels: data.days.labels, datasets: Object.keys(data.days.series).map(function (k) { return { label: names[k], data: data.days.series[k], backgroundColor: colors[k] }; }) },
        options: { responsive: true, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } });
      const c2 = document.getElementById("sat-chart");
      if (c2) new Chart(c2, { type: "bar", data: { labels: data.satisfaction.labels, datasets: [
          { label: "% hài lòng (mức 4–5)", data: data.satisfaction.pct, backgroundColor: data.satisfaction.pct.map(function (v) { return v >= data.satisfaction.target ? "#1a7f37" : "#c62828"; }) },
          { label: "Mục tiêu " + data.satisfaction.target + " %", type: "line", data: data.satisfaction.labels.map(function () { return data.satisfaction.target; }), borderColor: "#0b5cad", borderDash: [6, 4], pointRadius: 0 }] },
        options: { indexAxis: "x", scales: { y: { min: 0, max: 100 } } } });
    }
    const t = document.getElementById("telemetry-chart");
    if (t) { const d = JSON.parse(t.dataset.chart);
      new Chart(t, { type: "line", data: { labels: d.labels, datasets: [
        { label: "Nhiệt độ CPU (°C)", data: d.cpu, borderColor: "#c62828", pointRadius: 0 },
        { label: "Âm lượng", data: d.volume, borderColor: "#0b5cad", pointRadius: 0 },
        { label: "RSSI (dBm)", data: d.rssi, borderColor: "#1a7f37", pointRadius: 0 }] }, options: { scales: { x: { ticks: { maxTicksLimit: 8 } } } } }); }
  });
})();
