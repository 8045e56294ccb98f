/* ReviewDesk's own behaviour, served as a file: the Content-Security-Policy allows no inline
   script, no inline event handler (onclick=...) and no eval, so pages mark elements with data
   attributes and this file attaches the behaviour. */
"use strict";

/* A polling element marked data-poll-when-idle (the review queue) skips a refresh while the
   reader is using a control on the page, so a refresh never swaps a link or field away under
   them. (Before the CSP this was an htmx trigger filter, which htmx runs through Function().) */
document.addEventListener("htmx:beforeRequest", function (event) {
  var elt = event.detail && event.detail.elt;
  if (elt && elt.hasAttribute("data-poll-when-idle") && document.activeElement && document.activeElement !== document.body) {
    event.preventDefault();
  }
});

/* A button marked data-print prints the page (the evidence page). */
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("[data-print]");
  if (button) {
    event.preventDefault();
    window.print();
  }
});

/* The review page's lease heartbeat: while the reviewer holds a review (an element marked
   data-lease-url) and is active on the page (visible, and a key, click, scroll or edit in the
   last five minutes), renew the lease every minute. A reviewer who leaves stops renewing, so
   the lease runs out and the item goes back to the queue. A refusal (the lease ran out and
   someone else took it) is shown at once; the page keeps what the reviewer typed. */
(function () {
  var EVERY_MS = 60 * 1000, IDLE_MS = 5 * 60 * 1000;
  var lastActive = Date.now(), stopped = false;
  ["keydown", "pointerdown", "input", "scroll"].forEach(function (type) {
    document.addEventListener(type, function () { lastActive = Date.now(); }, {passive: true, capture: true});
  });

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function beat() {
    var lease = document.querySelector("[data-lease-url]");
    if (!lease || stopped || document.visibilityState !== "visible" || Date.now() - lastActive > IDLE_MS) {
      return;
    }
    fetch(lease.getAttribute("data-lease-url"), {
      method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken(), "Accept": "application/json"}
    }).then(function (response) {
      return response.json().then(function (body) { return {status: response.status, body: body}; });
    }).then(function (answer) {
      if (answer.status === 200 && answer.body.ok) {
        var until = lease.querySelector("[data-lease-until]");
        if (until) { until.textContent = answer.body.until; }
      } else if (answer.status === 409) {
        stopped = true;
        leaseLost(lease, answer.body);
      }
    }).catch(function () { /* offline for a moment: the next beat tries again */ });
  }

  /* The lease is gone: the page stops offering decisions it would refuse (and the release),
     keeps the reviewer's text, and, when nobody else took the item, offers to claim it again
     with the text carried (the claim view puts it back in the editor). */
  function leaseLost(lease, body) {
    var holds = lease.querySelector("p.muted");
    if (holds) { holds.hidden = true; }
    var lost = document.getElementById("lease-lost");
    if (lost) { lost.textContent = body.error + " Your text stays here; nothing was saved."; lost.hidden = false; }
    document.querySelectorAll("#decision form:not(#reclaim-form) button, #release").forEach(function (button) { button.disabled = true; });
    var reclaim = document.getElementById("reclaim-form");
    if (reclaim && !body.held_by_other) {
      reclaim.hidden = false;
      reclaim.addEventListener("submit", function () {
        var editor = document.querySelector("textarea[name=edited_output]");
        if (editor) { reclaim.querySelector("input[name=edited_output]").value = editor.value; }
        /* The structured editor's fields go along as they are (the claim view refills them). */
        var fields = document.querySelectorAll("#decision [name^='out/']");
        fields.forEach(function (field) {
          if ((field.type === "checkbox" || field.type === "radio") && !field.checked) { return; }
          var copy = document.createElement("input");
          copy.type = "hidden"; copy.name = field.name; copy.value = field.value;
          reclaim.appendChild(copy);
        });
        if (fields.length) {
          var marker = document.createElement("input");
          marker.type = "hidden"; marker.name = "editor"; marker.value = "fields";
          reclaim.appendChild(marker);
        }
      });
    }
  }

  setInterval(beat, EVERY_MS);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { beat(); }
  });
  document.addEventListener("htmx:afterSwap", function () { stopped = false; });
})();

/* A checkbox marked data-select-all="name" selects every checkbox of that name in its form
   (the bulk confirm of the async lane; the page holds at most one page of rows). */
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.matches || !box.matches("input[data-select-all]")) {
    return;
  }
  var form = box.closest("form") || document;
  form.querySelectorAll("input[type=checkbox][name='" + box.getAttribute("data-select-all") + "']").forEach(function (item) {
    item.checked = box.checked;
  });
});
