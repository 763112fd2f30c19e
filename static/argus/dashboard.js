/*
 * Dashboard: the "System health" card polls the health endpoint.
 *
 * Markup: [data-health] with data-health-url and data-health-interval (ms), holding
 * [data-health-list] (filled here), [data-health-fallback] (shown without JS),
 * [data-health-overall], [data-health-updated] and [data-health-error].
 *
 * The report is {"status": "ok"|"down", "components": {name: {"status": "up",
 * "detail", "latency_ms"} | {"status": "down", "reason"}}}; HTTP 503 carries the same
 * body when something is down. Values are rendered with textContent only.
 */
(function () {
  "use strict";

  const LABELS = {
    database: "Database",
    broker: "Broker",
    channel_layer: "Channel layer",
    worker: "Worker",
    beat: "Scheduler (beat)",
  };
  const TIMEOUT_MS = 10000;

  function label(name) {
    if (Object.prototype.hasOwnProperty.call(LABELS, name)) return LABELS[name];
    const words = String(name).replace(/[_-]+/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function badge(text, color) {
    const span = document.createElement("span");
    span.className = "badge badge-" + color;
    span.textContent = text;
    return span;
  }

  function setBadge(el, text, color) {
    el.className = "badge badge-" + color;
    if (el.textContent !== text) el.textContent = text;
    el.hidden = false;
  }

  function clock(date) {
    return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function HealthCard(card) {
    this.card = card;
    this.url = card.getAttribute("data-health-url") || "/health/";
    this.interval = Math.max(2000, parseInt(card.getAttribute("data-health-interval"), 10) || 15000);
    this.list = card.querySelector("[data-health-list]");
    this.overall = card.querySelector("[data-health-overall]");
    this.updated = card.querySelector("[data-health-updated]");
    this.error = card.querySelector("[data-health-error]");
    this.timer = null;
    this.busy = false;
    this.lastRun = 0;

    // Without JS the fallback text points to the endpoint; with JS it says we are
    // checking until the first answer replaces it.
    this.fallback = card.querySelector("[data-health-fallback]");
    if (this.fallback) this.fallback.textContent = "Checking components…";
    this.card.setAttribute("aria-busy", "true");

    document.addEventListener("visibilitychange", this.onVisibility.bind(this));
    this.refresh();
  }

  HealthCard.prototype.schedule = function () {
    clearTimeout(this.timer);
    this.timer = setTimeout(this.refresh.bind(this), this.interval);
  };

  HealthCard.prototype.onVisibility = function () {
    // Polling pauses in a background tab and catches up when it is shown again.
    if (!document.hidden && Date.now() - this.lastRun >= this.interval) this.refresh();
  };

  HealthCard.prototype.refresh = function () {
    clearTimeout(this.timer);
    if (this.busy) return;
    if (document.hidden) return; // onVisibility restarts polling
    this.busy = true;
    this.lastRun = Date.now();

    const self = this;
    const controller = window.AbortController ? new AbortController() : null;
    const timeout = setTimeout(function () {
      if (controller) controller.abort();
    }, TIMEOUT_MS);

    fetch(this.url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
      signal: controller ? controller.signal : undefined,
    })
      .then(function (response) {
        return response.json().then(
          function (body) {
            if (!body || typeof body.components !== "object" || body.components === null) {
              throw new Error("unexpected answer (HTTP " + response.status + ")");
            }
            return body;
          },
          function () {
            throw new Error("HTTP " + response.status + " without a health report");
          }
        );
      })
      .then(
        function (report) {
          self.render(report);
        },
        function (err) {
          const reason = err && err.name === "AbortError" ? "timed out" : (err && err.message) || String(err);
          self.fail(reason);
        }
      )
      .then(function () {
        clearTimeout(timeout);
        self.busy = false;
        self.card.removeAttribute("aria-busy");
        self.schedule();
      });
  };

  HealthCard.prototype.render = function (report) {
    const items = [];
    let down = 0;
    let total = 0;
    Object.keys(report.components).forEach(function (name) {
      const component = report.components[name] || {};
      const up = component.status === "up";
      total += 1;
      if (!up) down += 1;

      const item = document.createElement("li");
      item.className = "health-item " + (up ? "is-up" : "is-down");

      const title = document.createElement("span");
      title.className = "health-name";
      title.textContent = label(name);

      const detail = document.createElement("span");
      detail.className = "health-detail";
      if (up) {
        const parts = [];
        if (component.detail) parts.push(String(component.detail));
        if (typeof component.latency_ms === "number") parts.push(component.latency_ms.toFixed(1) + " ms");
        detail.textContent = parts.join(" · ");
      } else {
        detail.textContent = component.reason ? String(component.reason) : "No reason given.";
      }

      item.append(title, badge(up ? "Up" : "Down", up ? "green" : "red"), detail);
      items.push(item);
    });

    this.list.replaceChildren.apply(this.list, items);
    this.list.hidden = false;
    if (this.fallback) this.fallback.hidden = true;
    if (this.error) this.error.hidden = true;

    if (this.overall) {
      if (report.status === "ok" && down === 0) {
        setBadge(this.overall, "All systems up", "green");
      } else {
        setBadge(this.overall, down + " of " + total + " down", "red");
      }
    }
    if (this.updated) this.updated.textContent = "Checked at " + clock(new Date()) + "; refreshes every " + Math.round(this.interval / 1000) + " s.";
  };

  HealthCard.prototype.fail = function (reason) {
    if (this.fallback) this.fallback.hidden = true;
    if (this.error) {
      this.error.textContent = "Could not load the health report: " + reason + ".";
      this.error.hidden = false;
    }
    if (this.overall) setBadge(this.overall, "Unknown", "gray");
    if (this.updated) this.updated.textContent = "Last attempt at " + clock(new Date()) + "; retrying in " + Math.round(this.interval / 1000) + " s.";
  };

  function start() {
    if (!window.fetch) return; // the no-JS fallback text stays visible
    document.querySelectorAll("[data-health]").forEach(function (card) {
      if (!card.argusHealth) card.argusHealth = new HealthCard(card);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
