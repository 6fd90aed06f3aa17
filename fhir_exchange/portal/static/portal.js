// The inbox looks for new consults every data-poll-seconds (the portal_poll_seconds setting): it asks for
// the rows again and swaps them in when they changed, announcing arrivals in a polite live region. Plain
// JavaScript, no build step; without JavaScript the page still works (reload to refresh).
(function () {
  "use strict";
  // The consult request form: offer only the departments the chosen hub offers (the server checks it too).
  var hub = document.getElementById("n-hub");
  var department = document.getElementById("n-department");
  function offered() {
    var codes = (hub.options[hub.selectedIndex].getAttribute("data-departments") || "").split(" ");
    Array.prototype.forEach.call(department.options, function (option) {
      option.hidden = option.disabled = codes.indexOf(option.value) < 0;
    });
    if (department.selectedOptions.length && department.selectedOptions[0].disabled) {
      var first = Array.prototype.find.call(department.options, function (o) { return !o.disabled; });
      if (first) { department.value = first.value; }
    }
  }
  if (hub && department) { hub.addEventListener("change", offered); offered(); }
}());

(function () {
  "use strict";
  var body = document.querySelector("tbody[data-poll]");
  if (!body) { return; }
  var seconds = parseFloat(body.getAttribute("data-poll-seconds")) || 15;
  var url = body.getAttribute("data-poll");
  var note = document.getElementById("arrivals");
  function ids(root) {
    return Array.prototype.map.call(root.querySelectorAll("tr[data-id]"), function (tr) { return tr.getAttribute("data-id"); });
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, redirect: "manual" })
      .then(function (response) {
        if (response.status !== 200) { throw new Error("stopped"); }  // signed out: stop polling
        return response.text();
      })
      .then(function (html) {
        var before = ids(body);
        var holder = document.createElement("tbody");
        holder.innerHTML = html;
        var after = ids(holder);
        if (holder.innerHTML.trim() !== body.innerHTML.trim()) {
          body.innerHTML = holder.innerHTML;
          var added = after.filter(function (id) { return before.indexOf(id) < 0; });
          if (added.length && note) { note.hidden = false; }
        }
        window.setTimeout(poll, seconds * 1000);
      })
      .catch(function () { /* signed out or offline: the next page load starts again */ });
  }
  window.setTimeout(poll, seconds * 1000);
}());
