// Progressive enhancement: follow a run's log with server-sent events. Pages work without it.
(function () {
  // Re-read the steps table from the server (states and durations) without reloading the page.
  var refreshing = false;
  function refreshSteps() {
    var steps = document.getElementById("steps");
    if (!steps || refreshing) { return; }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("steps");
        if (fresh) { steps.replaceWith(fresh); }
      }).finally(function () { refreshing = false; });
  }
  function follow(pre) {
    var state = document.getElementById("run-state");
    var after = pre.getAttribute("data-after") || "0";
    var source = new EventSource(pre.getAttribute("data-log-stream") + "?after=" + after);
    var atBottom = function () { return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40; };
    source.addEventListener("log", function (e) {
      var chunk = JSON.parse(e.data), stick = atBottom();
      pre.appendChild(document.createTextNode(chunk.text));
      if (stick) { pre.scrollTop = pre.scrollHeight; }
      if (chunk.text.indexOf("-- step") !== -1) { refreshSteps(); }
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
      if (live) { live.textContent = "Run finished: " + done.state + "."; }
      refreshSteps();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre[data-log-stream]").forEach(follow);
  });
})();
