// airlock console: behaviour that needs no inline script (CSP forbids it).
// Every page works without this file; pass values to it in data-*
// attributes, never in inline script.
(function () {
  "use strict";
  // After an htmx swap driven by a Server-Sent Event, say when the list
  // was last brought up to date.
  document.addEventListener("htmx:afterSwap", function (e) {
    var stamp = document.getElementById("updated");
    if (stamp && e.detail && e.detail.target && e.detail.target.id === "queue") {
      stamp.textContent = "updated " + new Date().toLocaleTimeString();
    }
  });
})();
