/*
 * Agents pages: the agent form offers only the parents the chosen role allows
 * (MASTER: none; SUPERVISOR: masters; WORKER: supervisors and masters) and only the
 * prompt tools of the chosen home server. The service checks the same rules: this
 * only spares people choices that would be refused. No dependencies.
 */
(function () {
  "use strict";

  function narrow(select, fits) {
    Array.prototype.forEach.call(select.options, function (option) {
      if (!option.value) return; // the empty choice stays
      const ok = fits(option);
      option.hidden = !ok;
      option.disabled = !ok;
    });
    const chosen = select.options[select.selectedIndex];
    if (chosen && chosen.disabled) select.value = "";
  }

  function followRole(form) {
    const role = form.querySelector('select[name="role"]');
    const parent = form.querySelector('select[name="parent"]');
    const hint = form.querySelector("[data-parent-hint]");
    if (!role || !parent) return;
    let rules;
    try {
      rules = JSON.parse(form.getAttribute("data-parent-roles") || "{}");
    } catch (err) {
      return;
    }
    function apply() {
      const allowed = rules[role.value] || [];
      narrow(parent, function (option) {
        return allowed.indexOf(option.getAttribute("data-role")) !== -1;
      });
      const none = allowed.length === 0 && role.value !== "";
      parent.disabled = none;
      if (hint) {
        hint.hidden = !none;
        hint.textContent = none ? "A master agent has no parent." : "";
      }
    }
    role.addEventListener("change", apply);
    apply();
  }

  function followServer(form) {
    const server = form.querySelector('select[name="server"]');
    const tool = form.querySelector('select[name="engine_tool"]');
    if (!server || !tool) return;
    function apply() {
      narrow(tool, function (option) {
        return server.value !== "" && option.getAttribute("data-server") === server.value;
      });
    }
    server.addEventListener("change", apply);
    apply();
  }

  function start() {
    document.querySelectorAll("form[data-parent-roles]").forEach(function (form) {
      followRole(form);
      followServer(form);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
