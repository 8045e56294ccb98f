/* The submitter's pages (issue 8, section 3), served as a file for the strict CSP.

   1. The guided form: a text answer longer than its field allows is never cut. The server
      refuses it with a message; here the submitter is warned as they paste or type, with a
      counter, before they press Next. (The input carries data-maxlength instead of maxlength,
      because a browser cuts a paste at maxlength without a word.)
   2. The wizard id: the form's URL carries this tab's wizard (?w=...); the address bar gets it
      too, so a reload keeps this tab's answers and another tab keeps its own.
   3. The draft as it is written: server-sent events from data-stream-url, appended as text.
      The page's htmx polling goes on regardless, so without EventSource or Redis it still
      reaches the result; when the draft is done (or the status says so) the preview goes. */
"use strict";

(function () {
  /* --- 1. lengths ------------------------------------------------------------------- */

  /* Characters as the server counts them: code points, and a line break is sent as CR LF. */
  function serverLength(value) {
    var length = 0;
    for (var ch of value) { length += ch === "\n" ? 2 : 1; }
    return length;
  }

  /* 12,000 as the server's refusal writes it (workflows/forms.py): always with a comma, not in
     the browser's locale, so the warning here and the message after Next show the same number. */
  function count(n) {
    return n.toLocaleString("en-US");
  }

  function noteFor(input, cls) {
    var id = input.id + "_" + cls;
    var note = document.getElementById(id);
    if (!note) {
      note = document.createElement("p");
      note.id = id;
      note.className = cls;
      input.insertAdjacentElement("afterend", note);
    }
    return note;
  }

  function checkLength(input, pasted) {
    var limit = parseInt(input.getAttribute("data-maxlength"), 10);
    if (!limit) { return; }
    var length = serverLength(input.value);
    var counter = noteFor(input, "char-count");
    counter.textContent = count(length) + " / " + count(limit) + " characters";
    counter.classList.toggle("over", length > limit);
    var warning = document.getElementById(input.id + "_field-warning");
    if (length > limit) {
      warning = noteFor(input, "field-warning");
      warning.setAttribute("role", "alert");
      warning.textContent = (pasted ? "What you pasted makes this answer " : "This answer is now ") +
        count(length) + " characters long; the most it can take is " + count(limit) +
        ". Nothing has been cut: please shorten it by " + count(length - limit) +
        " characters before you go on.";
      input.setAttribute("aria-describedby", warning.id);
    } else if (warning) {
      warning.remove();
      input.removeAttribute("aria-describedby");
    }
  }

  var pasting = new WeakSet();
  document.addEventListener("paste", function (event) {
    var input = event.target;
    if (input && input.hasAttribute && input.hasAttribute("data-maxlength")) {
      pasting.add(input);
    }
  }, true);
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (input && input.hasAttribute && input.hasAttribute("data-maxlength")) {
      checkLength(input, pasting.has(input));
      pasting.delete(input);
    }
  });

  function checkAll(root) {
    root.querySelectorAll("[data-maxlength]").forEach(function (input) {
      if (input.value) { checkLength(input, false); }
    });
  }

  /* --- 2. the wizard id in the address bar ---------------------------------------------- */

  function keepWizardInUrl(root) {
    var form = root.querySelector && root.querySelector("form[data-wizard]");
    if (!form || !form.getAttribute("data-wizard") || !window.history.replaceState) { return; }
    var url = new URL(window.location.href);
    var action = new URL(form.getAttribute("action"), window.location.href);
    if (url.pathname === action.pathname && url.searchParams.get("w") !== form.getAttribute("data-wizard")) {
      window.history.replaceState(window.history.state, "", action.pathname + action.search);
    }
  }

  /* --- 3. the draft as it is written ---------------------------------------------------- */

  function refreshStatus(card) {
    var status = document.getElementById("submission-status");
    if (status && window.htmx) {
      window.htmx.ajax("GET", card.getAttribute("data-status-url"), { target: status, swap: "outerHTML" });
    }
  }

  function watchDraft(card) {
    if (!window.EventSource) { return; }
    var box = document.getElementById("draft-stream");
    var source = new EventSource(card.getAttribute("data-stream-url"));
    var finished = false;
    function finish() {
      if (finished) { return; }
      finished = true;
      source.close();
      box.classList.remove("streaming");
      box.setAttribute("aria-busy", "false");
      refreshStatus(card);
    }
    source.addEventListener("reset", function () { box.textContent = ""; });
    source.addEventListener("text", function (event) {
      var piece = JSON.parse(event.data).t;
      if (piece) {
        card.hidden = false;
        box.appendChild(document.createTextNode(piece));
      }
    });
    source.addEventListener("end", finish);
    source.addEventListener("error", function () {
      /* 204 (nothing to stream) or a dropped connection: polling carries on. */
      if (source.readyState === EventSource.CLOSED) { finished = true; }
    });
    card.__closeStream = function () { finished = true; source.close(); };
  }

  /* When the polled status says the draft is no longer being written, the preview goes: the
     routed page shows the released text, or says a colleague will review it. */
  document.addEventListener("htmx:afterSwap", function () {
    var status = document.getElementById("submission-status");
    var card = document.getElementById("draft-stream-card");
    if (status && card && status.getAttribute("data-working") === "false") {
      if (card.__closeStream) { card.__closeStream(); }
      card.remove();
    }
  });

  document.addEventListener("htmx:load", function (event) {
    checkAll(event.detail.elt);
    keepWizardInUrl(document);
  });

  function start() {
    checkAll(document);
    keepWizardInUrl(document);
    var card = document.getElementById("draft-stream-card");
    if (card) { watchDraft(card); }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
