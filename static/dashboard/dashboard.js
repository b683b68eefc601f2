// Swap the cards, charts and history table every few seconds without a reload.
// No dependencies: fetch() the server-rendered fragment and replace #live's contents.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("refresh-status");
  if (!live || !window.fetch) { return; }
  var seconds = parseInt(live.getAttribute("data-refresh-seconds"), 10) || 10;
  var url = live.getAttribute("data-live-url");
  var zone = live.getAttribute("data-time-zone") || "UTC";
  var busy = false;

  function say(text, stale) {
    if (!status) { return; }
    status.textContent = text;
    status.classList.toggle("stale", !!stale);
  }

  // The page's one time format: 24-hour, in the configured zone, zone named.
  function clock(date) {
    try {
      return date.toLocaleTimeString("en-GB", { hour12: false, timeZone: zone,
                                                timeZoneName: "short" });
    } catch (error) {  // an unknown zone name: fall back to UTC, still labelled
      return date.toISOString().slice(11, 19) + " UTC";
    }
  }

  // Replacing #live would drop keyboard focus from the button or link it is on (and a
  // keyboard user back to the top of the page), so no swap while focus is inside it.
  function focusInside() {
    var active = document.activeElement;
    return !!active && active !== document.body && live.contains(active);
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    if (focusInside()) {
      say("not refreshed while a control below has focus (" + clock(new Date()) + ")", false);
      return;
    }
    busy = true;
    fetch(url + window.location.search, {
      credentials: "same-origin",
      redirect: "manual",  // an expired session must not swap the login page in
      headers: { "X-Requested-With": "XMLHttpRequest" }
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + (response.status || "redirect")); }
      return response.text();
    }).then(function (html) {
      live.innerHTML = html;
      say("updated " + clock(new Date()), false);
    }).catch(function (error) {
      say("refresh failed (" + error.message + "), reload the page", true);
    }).finally(function () { busy = false; });
  }

  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
}());
