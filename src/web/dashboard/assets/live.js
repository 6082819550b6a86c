// Live job log: appends the job's log lines as they arrive over Server-Sent Events.
// The browser's EventSource resumes after a drop with Last-Event-ID by itself.
(function () {
  const log = document.getElementById("log");
  if (!log || !window.EventSource) return;
  const status = document.getElementById("status");
  let url = log.dataset.events;
  if (log.dataset.after) url += "?after=" + encodeURIComponent(log.dataset.after);
  const source = new EventSource(url);
  source.addEventListener("line", function (e) {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    log.append(e.data + "\n");
    log.dataset.lines = String(Number(log.dataset.lines || "0") + 1);
    if (stick) log.scrollTop = log.scrollHeight;
  });
  const FINAL = ["succeeded", "no_changes", "failed", "cancelled", "rejected"];
  source.addEventListener("status", function (e) {
    const s = JSON.parse(e.data);
    if (status) {
      status.textContent = s.status;
      status.className = "badge s-" + s.status;
    }
    const cost = document.getElementById("cost");
    if (cost && s.cost) cost.textContent = s.cost;
    // A final job can no longer be cancelled.
    const cancel = document.getElementById("cancel");
    if (cancel && FINAL.indexOf(s.status) >= 0) cancel.closest(".actions").remove();
  });
  source.addEventListener("end", function () {
    source.close();
    // The final record (PR link, cost, summary) is on the page's next load.
    log.dataset.ended = "true";
  });
})();
