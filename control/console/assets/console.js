// airlock console: behaviour that needs no inline script (CSP forbids it).
// Every page works without this file; pass values to it in data-*
// attributes, never in inline script.
(function () {
  "use strict";
  // After an htmx swap driven by a Server-Sent Event, say when the list
  // was last brought up to date.
  document.addEventListener("htmx:afterSwap", function (e) {
    var stamp = document.getElementById("updated");
    var id = e.detail && e.detail.target && e.detail.target.id;
    if (stamp && (id === "queue" || id === "holds")) {
      stamp.textContent = "updated " + new Date().toLocaleTimeString();
    }
  });

  // A held statement's countdown: <time class="countdown" datetime=...>
  // reads the time left until its deadline, every second.
  function left(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    var m = Math.floor(s / 60);
    return m > 0 ? m + "m" + (s % 60) + "s" : s + "s";
  }
  setInterval(function () {
    var els = document.querySelectorAll("time.countdown[datetime]");
    for (var i = 0; i < els.length; i++) {
      var at = Date.parse(els[i].getAttribute("datetime"));
      if (!isNaN(at)) {
        els[i].textContent = left(at - Date.now());
      }
    }
  }, 1000);
})();
