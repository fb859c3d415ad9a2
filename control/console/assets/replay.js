// airlock console: starts asciinema-player on a session page. Loaded as a
// file (CSP forbids inline script); settings come from data- attributes
// of #player: data-cast (the asciicast v2 recording), data-live (an open
// session's Server-Sent Events stream for the player's eventsource
// driver), data-cols and data-rows.
(function () {
  "use strict";
  function start() {
    var el = document.getElementById("player");
    if (!el || !window.AsciinemaPlayer) {
      return;
    }
    var opts = {
      cols: parseInt(el.dataset.cols, 10) || 80,
      rows: parseInt(el.dataset.rows, 10) || 24,
      fit: "width",
      idleTimeLimit: 2,
    };
    var src = el.dataset.cast;
    if (el.dataset.live) {
      src = { driver: "eventsource", url: el.dataset.live };
      opts.autoPlay = true;
    }
    window.airlockPlayer = window.AsciinemaPlayer.create(src, el, opts);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
