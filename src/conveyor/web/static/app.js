// Progressive enhancement: follow a run's log with server-sent events. Pages work without it.
(function () {
  function follow(pre) {
    var state = document.getElementById("run-state");
    var after = pre.getAttribute("data-after") || "0";
    var source = new EventSource(pre.getAttribute("data-log-stream") + "?after=" + after);
    var atBottom = function () { return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40; };
    source.addEventListener("log", function (e) {
      var chunk = JSON.parse(e.data), stick = atBottom();
      pre.appendChild(document.createTextNode(chunk.text));
      if (stick) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("end", function (e) {
      source.close();
      var done = JSON.parse(e.data);
      if (state) {
        state.textContent = done.state;
        state.className = "badge s-" + done.state;
        state.setAttribute("data-finished", "true");
      }
      var live = document.getElementById("live-note");
      if (live) { live.textContent = "Run finished: " + done.state + ". Reload for step durations."; }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre[data-log-stream]").forEach(follow);
  });
})();
