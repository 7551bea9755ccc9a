/*
 * Signing in and out of the chat page (servers with SLUICE_API_KEYS).
 *
 * The key is pasted once, sent in a header to POST /session (Sluice.signIn), and forgotten:
 * the server answers with a session cookie that no script can read, then the page reloads
 * and the server renders what the session may see. Sign out: DELETE /session, reload.
 */
(function () {
  "use strict";

  var form = document.getElementById("signin-form");
  if (form) {
    var keyBox = document.getElementById("api-key");
    var button = document.getElementById("signin");
    var errorEl = document.getElementById("signin-error");
    keyBox.focus();
    button.disabled = false;  // disabled in the HTML: see templates/signin.html
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var key = keyBox.value.trim();
      if (!key) return;
      button.disabled = true;
      errorEl.hidden = true;
      Sluice.signIn(key).then(function (ok) {
        keyBox.value = "";
        button.disabled = false;
        if (ok) {
          window.location.reload();
        } else {
          errorEl.textContent = "That key was not accepted.";
          errorEl.hidden = false;
          keyBox.focus();
        }
      });
    });
  }

  var signOut = document.getElementById("signout");
  if (signOut) {
    signOut.addEventListener("click", function () {
      signOut.disabled = true;
      Sluice.signOut().then(function () { window.location.reload(); });
    });
  }
})();
