/*
 * Argus realtime client: one websocket to /ws/ per page, topic subscriptions with
 * catch-up after a reconnect. No dependencies, no build step.
 *
 * Protocol (see argus/consumers.py):
 *   client -> server  {"subscribe": topic, "after": lastId|null}   {"unsubscribe": topic}
 *   server -> client  {"subscribed": topic, "last_id": n, "truncated": bool}
 *                     {"id": n, "topic": t, "type": s, "at": iso, "data": {...}}
 *                     {"unsubscribed": topic}    {"error": message, "topic": topic|null}
 *   close code 4401: the login session ended (logout); the client stops and shows
 *   "Signed out". A refused handshake (not signed in) is detected with a HEAD request.
 *
 * API (window.Argus.realtime):
 *   subscribe(topic, handler, options?) -> unsubscribe()
 *       handler(event) runs for every event of the topic, in id order.
 *       options.onSubscribed({topic, last_id, truncated}), options.onError(message)
 *   bind(root)      subscribe the [data-topic] elements under root (done automatically
 *                   for the page and for content added later, e.g. by htmx)
 *   lastId(topic)   id of the last event seen on the topic, or null
 *   state           "idle" | "connecting" | "live" | "reconnecting" | "signed-out"
 *
 * Markup: <section data-topic="org"> with a [data-events] list that receives the
 * newest MAX_EVENTS events (newest first), an optional [data-empty] element hidden
 * once an event arrives, and an optional [data-topic-error] element for errors. A
 * server-rendered list sets data-last-id on the topic element to the newest id it
 * shows, so the subscription starts after it and replays anything newer.
 * Any [data-connection-state] element shows the connection state (text + data-state).
 *
 * Document events: argus:event (detail: the event), argus:connection ({state}),
 * argus:subscribed ({topic, last_id, truncated}), argus:topic-error ({topic, error}).
 *
 * Event data is untrusted: it is only ever rendered with textContent.
 */
(function () {
  "use strict";

  const Argus = (window.Argus = window.Argus || {});
  if (Argus.realtime) return;

  const PATH = "/ws/";
  const MAX_EVENTS = 50;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const IDLE_CLOSE_MS = 2000; // keep the socket a moment after the last unsubscribe
  const MAX_DATA_CHARS = 400;
  const CLOSE_UNAUTHENTICATED = 4401;
  const SIGNED_OUT = "signed out"; // the message onError receives once signed out

  const STATE_LABELS = {
    idle: "Not connected",
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    "signed-out": "Signed out",
  };

  // topic -> {entries: Set<{handler, options}>, lastId: number|null}
  const topics = new Map();
  // bound [data-topic] element -> unsubscribe function
  const bound = new Map();

  let socket = null;
  let state = "idle";
  let attempt = 0;
  let retryTimer = null;
  let idleTimer = null;
  let everLive = false;
  let signedOut = false;

  // --- connection state -------------------------------------------------------

  function setState(next) {
    if (next === state) return;
    state = next;
    renderState(document);
    emit("argus:connection", { state: next });
  }

  function renderState(root) {
    const nodes = Array.prototype.slice.call(root.querySelectorAll("[data-connection-state]"));
    if (root.nodeType === 1 && root.hasAttribute("data-connection-state")) nodes.push(root);
    nodes.forEach(function (el) {
      el.setAttribute("data-state", state);
      el.textContent = STATE_LABELS[state] || state;
    });
  }

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  // --- socket -------------------------------------------------------------------

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + PATH;
  }

  function isOpen() {
    return socket !== null && socket.readyState === WebSocket.OPEN;
  }

  function send(message) {
    if (isOpen()) socket.send(JSON.stringify(message));
  }

  function sendSubscribe(topic) {
    const entry = topics.get(topic);
    if (entry) send({ subscribe: topic, after: entry.lastId });
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (socket !== null || signedOut || topics.size === 0) return;
    setState(everLive ? "reconnecting" : "connecting");

    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    let opened = false;

    ws.addEventListener("open", function () {
      if (socket !== ws) return;
      opened = true;
      everLive = true;
      setState("live");
      topics.forEach(function (_entry, topic) {
        sendSubscribe(topic);
      });
    });

    ws.addEventListener("message", function (message) {
      if (socket !== ws) return;
      let data;
      try {
        data = JSON.parse(message.data);
      } catch (err) {
        return;
      }
      if (data !== null && typeof data === "object") receive(data);
    });

    ws.addEventListener("close", function (closeEvent) {
      if (socket !== ws) return;
      socket = null;
      if (closeEvent.code === CLOSE_UNAUTHENTICATED) {
        stopSignedOut();
      } else if (!opened) {
        // A refused handshake looks like a network failure (code 1006); find out
        // whether the session is gone before retrying.
        checkSignedIn().then(function (signedIn) {
          if (signedIn === false) stopSignedOut();
          else scheduleReconnect();
        });
      } else {
        scheduleReconnect();
      }
    });
  }

  function scheduleReconnect() {
    if (signedOut || socket !== null || retryTimer !== null) return;
    if (topics.size === 0) {
      setState("idle");
      return;
    }
    // Exponential backoff with jitter: 1 s, then up to 2, 4, 8, 16, 30 s.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    const delay = Math.max(BACKOFF_MIN_MS, ceiling * (0.5 + Math.random() * 0.5));
    attempt += 1;
    setState(everLive ? "reconnecting" : "connecting");
    retryTimer = setTimeout(connect, delay);
  }

  function stopSignedOut() {
    if (signedOut) return;
    signedOut = true;
    clearTimeout(retryTimer);
    retryTimer = null;
    setState("signed-out");
    topics.forEach(function (entry) {
      entry.entries.forEach(function (sub) {
        call(sub.options.onError, SIGNED_OUT);
      });
    });
  }

  /* Resolves false when the current page now redirects (to the login page), true
   * when it answers, and null when the server cannot be reached. */
  function checkSignedIn() {
    if (!window.fetch) return Promise.resolve(null);
    return fetch(window.location.href, {
      method: "HEAD",
      credentials: "same-origin",
      redirect: "manual",
      cache: "no-store",
    }).then(
      function (response) {
        if (response.type === "opaqueredirect") return false;
        return response.status === 401 || response.status === 403 ? false : true;
      },
      function () {
        return null;
      }
    );
  }

  function disconnectIfIdle() {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(function () {
      if (topics.size !== 0) return;
      clearTimeout(retryTimer);
      retryTimer = null;
      if (socket !== null) {
        const ws = socket;
        socket = null;
        ws.close(1000);
      }
      if (!signedOut) setState("idle");
    }, IDLE_CLOSE_MS);
  }

  // --- messages from the server ------------------------------------------------------

  function receive(message) {
    if (typeof message.subscribed === "string") {
      onSubscribed(message);
    } else if (typeof message.error === "string") {
      onError(message);
    } else if (typeof message.id === "number" && typeof message.topic === "string") {
      onEvent(message);
    }
    // {"unsubscribed": topic} needs no action.
  }

  function onSubscribed(message) {
    const topic = message.subscribed;
    const entry = topics.get(topic);
    if (!entry) return;
    attempt = 0; // the server answers: the next outage starts the backoff afresh
    const lastId = typeof message.last_id === "number" ? message.last_id : 0;
    if (entry.lastId === null) {
      entry.lastId = lastId;
    } else if (lastId < entry.lastId) {
      // The stream restarted (its counter is lower than what we saw): follow it from
      // its current position, or new events would be taken for duplicates. The
      // server marks this subscription truncated, so the gap notice shows.
      entry.lastId = lastId;
    }
    const info = { topic: topic, last_id: lastId, truncated: message.truncated === true };
    entry.entries.forEach(function (sub) {
      call(sub.options.onSubscribed, info);
    });
    emit("argus:subscribed", info);
  }

  function onError(message) {
    const topic = typeof message.topic === "string" ? message.topic : null;
    const entry = topic !== null ? topics.get(topic) : null;
    if (entry) {
      entry.entries.forEach(function (sub) {
        call(sub.options.onError, message.error);
      });
    } else if (window.console) {
      window.console.warn("argus realtime:", message.error);
    }
    emit("argus:topic-error", { topic: topic, error: message.error });
  }

  function onEvent(event) {
    const entry = topics.get(event.topic);
    if (!entry) return;
    if (entry.lastId !== null && event.id <= entry.lastId) return; // already seen
    entry.lastId = event.id;
    entry.entries.forEach(function (sub) {
      call(sub.handler, event);
    });
    emit("argus:event", event);
  }

  function call(fn, arg) {
    if (typeof fn !== "function") return;
    try {
      fn(arg);
    } catch (err) {
      if (window.console) window.console.error(err);
    }
  }

  // --- subscriptions -------------------------------------------------------------------

  function subscribe(topic, handler, options) {
    if (typeof topic !== "string" || topic === "") {
      throw new TypeError("Argus.realtime.subscribe: topic must be a non-empty string");
    }
    const sub = { handler: handler, options: options || {} };
    let entry = topics.get(topic);
    const isNew = !entry;
    if (isNew) {
      // `options.after`: the id of the newest event the page was rendered with, so the
      // first subscription replays what happened between rendering and connecting.
      const after = sub.options.after;
      entry = { entries: new Set(), lastId: Number.isInteger(after) && after >= 0 ? after : null };
      topics.set(topic, entry);
    }
    entry.entries.add(sub);
    clearTimeout(idleTimer);
    if (signedOut) {
      call(sub.options.onError, SIGNED_OUT);
    } else if (isNew && isOpen()) {
      sendSubscribe(topic);
    } else if (socket === null && retryTimer === null) {
      connect();
    }

    let active = true;
    return function unsubscribe() {
      if (!active) return;
      active = false;
      const current = topics.get(topic);
      if (!current) return;
      current.entries.delete(sub);
      if (current.entries.size === 0) {
        topics.delete(topic);
        send({ unsubscribe: topic });
        if (topics.size === 0) disconnectIfIdle();
      }
    };
  }

  // --- [data-topic] elements ------------------------------------------------------

  function ownParts(el, selector) {
    // Parts of this topic element, not of a topic element nested inside it.
    return Array.prototype.filter.call(el.querySelectorAll(selector), function (part) {
      return part.closest("[data-topic]") === el;
    });
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (typeof iso !== "string" || isNaN(date.getTime())) {
      return { text: String(iso), title: "" };
    }
    const sameDay = date.toDateString() === new Date().toDateString();
    const text = sameDay
      ? date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      : date.toLocaleString(undefined, {
          month: "short",
          day: "numeric",
          hour: "2-digit",
          minute: "2-digit",
          second: "2-digit",
        });
    return { text: text, title: date.toLocaleString() };
  }

  function compactJson(value) {
    if (value === undefined) return "";
    try {
      return JSON.stringify(value);
    } catch (err) {
      return String(value);
    }
  }

  function renderEvent(list, event) {
    const item = document.createElement("li");
    item.className = "event is-new";
    item.setAttribute("data-event-id", String(event.id));

    const time = document.createElement("time");
    time.className = "event-time";
    const when = formatTime(event.at);
    time.textContent = when.text;
    if (typeof event.at === "string") time.setAttribute("datetime", event.at);
    if (when.title) time.title = when.title;

    const type = document.createElement("span");
    type.className = "event-type";
    type.textContent = event.type == null ? "" : String(event.type);

    const data = document.createElement("span");
    data.className = "event-data";
    const json = compactJson(event.data);
    if (json.length > MAX_DATA_CHARS) {
      data.textContent = json.slice(0, MAX_DATA_CHARS) + "…";
      data.title = json.slice(0, 4000);
    } else {
      data.textContent = json;
    }

    item.append(time, type, data);
    insertNewest(list, item);
  }

  function renderGap(list) {
    const item = document.createElement("li");
    item.className = "event event-gap";
    item.textContent = "Some events from while the connection was down are no longer available.";
    insertNewest(list, item);
  }

  function insertNewest(list, item) {
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastElementChild);
  }

  function bindElement(el) {
    if (bound.has(el)) return;
    const topic = (el.getAttribute("data-topic") || "").trim();
    if (!topic) return;
    const lists = ownParts(el, "[data-events]");
    const empties = ownParts(el, "[data-empty]");
    const errors = ownParts(el, "[data-topic-error]");
    const renderedUpTo = parseInt(el.getAttribute("data-last-id") || "", 10);

    function showError(text) {
      errors.forEach(function (node) {
        node.textContent = text;
        node.hidden = !text;
      });
    }

    const unsubscribe = subscribe(
      topic,
      function (event) {
        lists.forEach(function (list) {
          renderEvent(list, event);
        });
        empties.forEach(function (node) {
          node.hidden = true;
        });
      },
      {
        after: isNaN(renderedUpTo) ? null : renderedUpTo,
        onSubscribed: function (info) {
          showError("");
          if (info.truncated) {
            lists.forEach(renderGap);
            empties.forEach(function (node) {
              node.hidden = true;
            });
          }
        },
        onError: function (message) {
          showError(
            message === SIGNED_OUT
              ? "You are signed out. Reload the page to sign in again."
              : "Live events are unavailable: " + message
          );
        },
      }
    );
    bound.set(el, unsubscribe);
  }

  function bind(root) {
    root = root || document;
    if (root.nodeType !== 1 && root.nodeType !== 9) return;
    if (root.nodeType === 1 && root.hasAttribute("data-topic")) bindElement(root);
    root.querySelectorAll("[data-topic]").forEach(bindElement);
    renderState(root);
  }

  function unbindDetached() {
    bound.forEach(function (unsubscribe, el) {
      if (!el.isConnected) {
        bound.delete(el);
        unsubscribe();
      }
    });
  }

  function observe() {
    if (!window.MutationObserver) return;
    new MutationObserver(function (mutations) {
      let removed = false;
      // Bind additions first, so content swapped in place keeps its topic subscribed.
      mutations.forEach(function (mutation) {
        mutation.addedNodes.forEach(function (node) {
          if (node.nodeType === 1) bind(node);
        });
        if (mutation.removedNodes.length) removed = true;
      });
      if (removed) unbindDetached();
    }).observe(document.documentElement, { childList: true, subtree: true });
  }

  // --- page lifecycle ------------------------------------------------------------------

  window.addEventListener("online", function () {
    if (retryTimer !== null) connect();
  });

  window.addEventListener("pagehide", function (pageEvent) {
    if (!pageEvent.persisted || socket === null) return;
    // Going into the back/forward cache: close now, reconnect (with catch-up) on return.
    const ws = socket;
    socket = null;
    ws.close(1000);
  });

  window.addEventListener("pageshow", function (pageEvent) {
    if (pageEvent.persisted) connect();
  });

  function start() {
    bind(document);
    observe();
  }

  Argus.realtime = {
    subscribe: subscribe,
    bind: bind,
    lastId: function (topic) {
      const entry = topics.get(topic);
      return entry ? entry.lastId : null;
    },
    get state() {
      return state;
    },
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
