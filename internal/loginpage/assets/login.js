// The login page's behaviour: get a QR code (or a login code to send in
// chat), show it, wait for the scan (or the message) and finish the login. It waits with Server-Sent Events, falls back to
// long-polling and then to plain polling with backoff when a proxy or the
// network gets in the way, and rides out network blips on the same code.
// Everything it needs comes from #wl-data; it loads nothing from elsewhere.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("wl-data").textContent);
  var T = cfg.t;
  function $(id) { return document.getElementById(id); }
  var box = $("wl-qr"), img = $("wl-img"), statusEl = $("wl-status");
  var veilText = $("wl-veil-text"), retry = $("wl-retry");
  var timerEl = $("wl-timer"), countdown = $("wl-countdown"), bar = $("wl-bar");
  var simulateLabel = $("wl-simulate") ? $("wl-simulate").textContent : "";
  var codeBox = $("wl-code"), digits = $("wl-digits"), steps = $("wl-steps");
  var switchBtn = $("wl-switch"), phoneBox = $("wl-phone"), scanHint = $("wl-scan-hint");

  // kind is what the page shows: "qr", or "code" for code login, where the
  // user sends the code to the Official Account in chat. kinds are those
  // the site offers.
  var kinds = cfg.kinds || ["qr"];
  var kind = box ? box.dataset.kind || kinds[0] : "qr";
  function say(name) {
    var c = "code" + name.charAt(0).toUpperCase() + name.slice(1);
    return kind === "code" && T[c] ? T[c] : T[name];
  }

  // gen counts login codes. Every callback checks it, so a late answer
  // about an abandoned code changes nothing.
  var gen = 0, code = null, ttl = 0, deadline = 0;
  var es = null, watchdog = 0, pollTimer = 0, tickTimer = 0;
  var mode = "sse", failures = 0, longFailures = 0, finished = false, state = "loading", waitingText = "";

  // The monotonic clock: a phone's wrong wall clock must not expire a code.
  function now() { return performance.now(); }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = "status" + (cls ? " " + cls : "");
  }

  // show moves the QR area to a state. button, when given, is the label of
  // the one action the state offers (new code, try again).
  function show(next, text, cls, button) {
    var active = document.activeElement;
    // A site with website login only has no QR area.
    var hadFocus = box && (!active || active === document.body || box.contains(active));
    state = next;
    if (box) { box.dataset.state = next; }
    if (veilText) { veilText.textContent = next === "waiting" ? "" : text; }
    setStatus(text, cls);
    if (next === "waiting" || next === "scanned") { waitingText = text; }
    var simulate = $("wl-simulate");
    if (simulate) { simulate.textContent = next === "scanned" ? T.simulateConfirm : kind === "code" ? T.simulateSend : simulateLabel; }
    if (!retry) { return; }
    retry.hidden = !button;
    if (button) {
      retry.textContent = button;
      // Keyboard and screen-reader users land on the way out, unless they
      // are busy elsewhere on the page.
      if (hadFocus) { retry.focus(); }
    } else if (hadFocus && active === retry && box) {
      box.focus();
    }
  }

  function stopWaiting() {
    if (es) { es.close(); es = null; }
    clearTimeout(watchdog);
    clearTimeout(pollTimer);
  }

  function stopTimer() {
    clearInterval(tickTimer);
    if (timerEl) { timerEl.hidden = true; }
  }

  function tick() {
    if (state !== "waiting" && state !== "scanned") { return; }
    var left = Math.max(0, Math.ceil((deadline - now()) / 1000));
    if (countdown) {
      countdown.textContent = T.expiresIn.replace("{t}", Math.floor(left / 60) + ":" + ("0" + left % 60).slice(-2));
    }
    if (bar) {
      bar.style.transform = "scaleX(" + (ttl > 0 ? left / ttl : 0) + ")";
      bar.parentNode.classList.toggle("low", left <= 30);
    }
    if (left <= 0) { expire(); }
  }

  function expire() {
    if (finished) { return; }
    stopWaiting();
    stopTimer();
    show("expired", say("expired"), "err", say("refresh"));
  }

  function fail(detail) {
    stopWaiting();
    stopTimer();
    show("error", T.error + (detail ? " (" + detail + ")" : ""), "err", T.retry);
  }

  // WeChat refuses this site until its owner changes its setup: a retry
  // cannot succeed, so none is offered; the page says whom to tell.
  function misconfigured() {
    stopWaiting();
    stopTimer();
    show("error", T.misconfigured, "err");
  }

  // arrange shows what belongs to the kind of login on screen.
  function arrange() {
    box.dataset.kind = kind;
    var isCode = kind === "code";
    if (codeBox) { codeBox.hidden = !isCode; }
    if (steps) { steps.hidden = !isCode; }
    if (phoneBox) { phoneBox.hidden = isCode; }
    if (scanHint) { scanHint.hidden = isCode; }
    if (switchBtn) {
      switchBtn.hidden = kinds.length < 2;
      switchBtn.textContent = isCode ? T.useQR : T.useCode;
    }
  }

  // create asks for a QR code or a login code. The server hands this
  // browser's pending one of that kind back instead of a new one when it
  // still has time left.
  function create() {
    var my = ++gen;
    stopWaiting();
    stopTimer();
    finished = false;
    failures = 0;
    longFailures = 0;
    mode = window.EventSource ? "sse" : "long";
    arrange();
    show("loading", say("loading"));
    var body = new URLSearchParams();
    body.set("next", cfg.next);
    fetch(cfg.prefix + "/" + kind, { method: "POST", body: body, credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) {
            var e = new Error(j.error || "HTTP " + r.status);
            e.reason = j.reason;
            e.fallback = j.fallback;
            throw e;
          }
          return j;
        });
      })
      .then(function (j) {
        if (my !== gen) { return; }
        code = j;
        ttl = j.expires_in;
        deadline = now() + ttl * 1000;
        if (kind === "code") {
          // Grouped for reading out and typing; copied without spaces.
          digits.textContent = j.code.replace(/^(\d{5})(\d+)$/, "$1 $2");
        } else {
          img.onerror = function () { if (my === gen) { fail(); } };
          img.src = j.qr_image;
          img.hidden = false;
          if (saveBtn) { saveBtn.disabled = true; }
        }
        show("waiting", say("waiting"));
        if (timerEl) { timerEl.hidden = false; }
        tick();
        tickTimer = setInterval(tick, 1000);
        wait(my);
      })
      .catch(function (e) {
        if (my !== gen) { return; }
        if (e.fallback === "code" && kinds.indexOf("code") >= 0 && kind !== "code") {
          // WeChat does not let this site's account make QR codes: the
          // code works instead, and the QR code is not offered again.
          kind = "code";
          kinds = ["code"];
          if ($("wl-note")) { $("wl-note").hidden = false; }
          create();
          return;
        }
        if (e.reason === "misconfigured") { misconfigured(); } else { fail(e.message); }
      });
  }

  function wait(my) {
    if (mode === "sse") { listen(my); } else { poll(my); }
  }

  // listen waits on Server-Sent Events. The browser reconnects a dropped
  // stream by itself; only a stream that keeps failing, or that never
  // delivers its first event (a buffering proxy), sends us to polling.
  function listen(my) {
    var errors = 0, heard = false;
    es = new EventSource(code.events_url);
    watchdog = setTimeout(function () { if (!heard) { degrade(my); } }, 8000);
    es.addEventListener("open", function () { errors = 0; });
    es.addEventListener("status", function (e) {
      if (my !== gen) { return; }
      heard = true;
      errors = 0;
      var s;
      try { s = JSON.parse(e.data).status; } catch (err) { return; }
      handle(my, s);
    });
    es.addEventListener("error", function (e) {
      // A server-sent "error" event carries data; the stream then ends and
      // the browser reconnects, like after a network error.
      if (my !== gen || finished || !es) { return; }
      // A stream that never worked is given up sooner than one that did
      // and lost its network for a moment.
      if (e.data === undefined && (es.readyState === EventSource.CLOSED || ++errors >= (heard ? 5 : 2))) {
        degrade(my);
        return;
      }
      setStatus(T.reconnecting, "info");
    });
  }

  function degrade(my) {
    if (my !== gen || finished) { return; }
    stopWaiting();
    mode = "long";
    poll(my);
  }

  // poll asks for the code's state: held open by the server in long mode,
  // answered at once in plain mode. Network and server failures retry the
  // same code with backoff; three failed long-polls without a good one
  // between them drop to plain polling, which gets through proxies that
  // cut long requests.
  function poll(my) {
    // After a failure the first try is a quick one, so that the page can
    // say it is back at once rather than when a long-poll ends.
    var long = mode === "long" && !failures;
    var url = code.poll_url + (long ? "&wait=25" : "");
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        // 403: another tab of this browser took over its login; 404: gone.
        if (r.status === 403 || r.status === 404) { return { status: "expired" }; }
        if (r.status >= 400 && r.status < 500 && r.status !== 429) { return { fatal: "HTTP " + r.status }; }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (j) {
        if (my !== gen || finished) { return; }
        if (j.fatal) { fail(j.fatal); return; }
        var quick = failures > 0;
        failures = 0;
        if (long) { longFailures = 0; }
        if (j.status === "confirmed") { finish(j.redirect, true); return; }
        if (j.status === "denied" && j.reason === "no_unionid") {
          stopTimer();
          show("denied", T.noUnionID, "err", T.refresh);
          return;
        }
        handle(my, j.status);
        if (j.status === "pending" || j.status === "scanned") {
          schedule(my, mode === "long" || quick ? 0 : 2000);
        }
      }, function () {
        if (my !== gen || finished) { return; }
        failures++;
        setStatus(T.reconnecting, "info");
        // Long-polls failing while quick polls get through: something on
        // the way cuts long requests.
        if (long && ++longFailures >= 3) { mode = "plain"; }
        // 1s, 2s, 4s… up to 15s, jittered so that a restarted server is not
        // hit by every waiting browser at once.
        schedule(my, Math.min(15000, 500 * Math.pow(2, Math.min(failures, 5))) * (0.75 + Math.random() / 2));
      });
  }

  function schedule(my, ms) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(function () {
      if (my === gen && !finished && (state === "waiting" || state === "scanned")) { poll(my); }
    }, ms);
  }

  function handle(my, s) {
    switch (s) {
    case "pending":
      if (state !== "waiting" || statusEl.textContent !== waitingText) { show("waiting", say("waiting")); }
      break;
    case "scanned":
      show("scanned", T.scanned, "info");
      break;
    case "confirmed":
      redeem(my, 0);
      break;
    case "expired":
      expire();
      break;
    case "denied":
      stopWaiting();
      stopTimer();
      show("denied", T.denied, "err", T.refresh);
      break;
    }
  }

  // redeem trades the confirmed code for the session cookie: one plain poll,
  // retried if the network drops it (the code stays confirmed until taken).
  function redeem(my, attempt) {
    stopWaiting();
    show("redeeming", T.success, "ok");
    fetch(code.poll_url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (j) {
        if (my !== gen) { return; }
        if (j.status === "confirmed") { finish(j.redirect, true); return; }
        if (j.status === "denied" && j.reason === "no_unionid") {
          stopTimer();
          show("denied", T.noUnionID, "err", T.refresh);
          return;
        }
        handle(my, j.status);
        if (j.status === "pending" || j.status === "scanned") { wait(my); }
      }, function (e) {
        if (my !== gen) { return; }
        if (attempt < 3) {
          setTimeout(function () { redeem(my, attempt + 1); }, 1000 * (attempt + 1));
        } else { fail(e.message); }
      });
  }

  // target is where a finished login goes. A path on this site always
  // qualifies; an absolute http(s) URL only when it came from our own poll
  // answer, where the server checked it against the configured hosts.
  function target(to, trusted) {
    if (typeof to !== "string") { return "/"; }
    if (to.charAt(0) === "/" && to.charAt(1) !== "/" && to.charAt(1) !== "\\") { return to; }
    if (trusted && /^https?:\/\//i.test(to)) { return to; }
    return "/";
  }

  function finish(to, trusted) {
    finished = true;
    gen++;
    stopWaiting();
    stopTimer();
    show("success", T.success, "ok");
    window.location.assign(target(to, trusted));
  }

  if (retry) { retry.addEventListener("click", create); }
  if (switchBtn) {
    switchBtn.addEventListener("click", function () {
      kind = kind === "code" ? "qr" : "code";
      create();
      box.focus();
    });
  }
  var copyCode = $("wl-copy-code");
  if (copyCode) {
    copyCode.addEventListener("click", function () {
      if (!code || !code.code) { return; }
      var done = function () { setStatus(T.codeCopied, "info"); };
      var select = function () {
        // No clipboard access: select the digits for the user to copy.
        var range = document.createRange();
        range.selectNodeContents(digits);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(code.code).then(done, select);
      } else { select(); }
    });
  }

  // Coming back to a hidden tab, or back online, catches up at once
  // instead of after the throttled timers.
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { tick(); } });
  window.addEventListener("online", function () {
    if (!finished && mode !== "sse" && (state === "waiting" || state === "scanned")) { schedule(gen, 0); }
  });

  // Website login. Shown embedded, WeChat's login page sits in a frame
  // here; otherwise a popup (falling back to a full-page visit when it is
  // blocked) or a full-page visit. The last page of either posts the
  // outcome here; only a message from this origin, of our type, is
  // believed, and a frame's only from the frame we made.
  var openBtn = $("wl-open"), frameBox = $("wl-frame"), embedCfg = cfg.embed;
  var frameGen = 0, frameEl = null, frameState = "", frameTimer = 0;

  // frameFailed says what went wrong and offers a new frame.
  function frameFailed(text) {
    frameBox.dataset.state = "error";
    setStatus(text || T.error, "err");
    var again = document.createElement("button");
    again.type = "button";
    again.className = "secondary";
    again.textContent = T.retry;
    again.addEventListener("click", embed);
    frameBox.replaceChildren(again);
    frameEl = null;
    again.focus();
  }

  // embed asks for a website login bound to this browser (the answer sets
  // its cookie) and shows WeChat's page for it in a frame. After the scan
  // WeChat sends the frame to our callback, which posts a one-time token
  // back here; the token is redeemed with this page's cookies, which the
  // frame, sent there from WeChat's site, may not have.
  function embed() {
    var my = ++frameGen;
    clearTimeout(frameTimer);
    frameEl = null;
    frameState = "";
    frameBox.hidden = false;
    frameBox.dataset.state = "loading";
    frameBox.replaceChildren();
    var body = new URLSearchParams();
    body.set("next", cfg.next);
    fetch(embedCfg.url, { method: "POST", body: body, credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) { throw new Error(j.error || "HTTP " + r.status); }
          return j;
        });
      })
      .then(function (j) {
        if (my !== frameGen || finished) { return; }
        if (j.status === "confirmed") { finish(j.redirect, true); return; }
        var f = document.createElement("iframe");
        f.title = T.frameTitle;
        f.width = "300";
        f.height = "400";
        // WeChat's page needs its scripts, its own origin and its form;
        // it may not navigate this page (no allow-top-navigation).
        f.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms");
        // Desktop WeChat's quick login talks to the local client.
        f.setAttribute("allow", "local-network-access");
        f.src = j.frame_url;
        frameState = j.state;
        frameEl = f;
        frameBox.replaceChildren(f);
        frameBox.dataset.state = "waiting";
        // The login behind the frame lasts expires_in; a new frame then.
        frameTimer = setTimeout(function () { if (my === frameGen && !finished) { embed(); } }, j.expires_in * 1000);
      })
      .catch(function (e) {
        if (my !== frameGen || finished) { return; }
        frameFailed(T.error + " (" + e.message + ")");
      });
  }

  // redeemFrame trades the frame's token for the session. Network failures
  // are retried: the result waits on the server until redeemed or expired.
  function redeemFrame(my, st, token, attempt) {
    frameBox.dataset.state = "redeeming";
    setStatus(T.success, "ok");
    var body = new URLSearchParams();
    body.set("state", st);
    body.set("token", token);
    fetch(embedCfg.redeem, { method: "POST", body: body, credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) { var e = new Error(j.error || "HTTP " + r.status); e.status = r.status; throw e; }
          return j;
        });
      })
      .then(function (j) {
        if (my !== frameGen) { return; }
        finish(j.redirect, true);
      }, function (e) {
        if (my !== frameGen) { return; }
        if (!e.status && attempt < 3) {
          setTimeout(function () { redeemFrame(my, st, token, attempt + 1); }, 1000 * (attempt + 1));
          return;
        }
        frameFailed(T.error + " (" + e.message + ")");
      });
  }

  if (openBtn && cfg.open) {
    openBtn.addEventListener("click", function () {
      if (cfg.display === "embedded" && frameBox && embedCfg) {
        openBtn.parentNode.hidden = true;
        embed();
        frameBox.focus();
        return;
      }
      if (cfg.display === "page") {
        window.location.assign(cfg.open);
        return;
      }
      var w = 800, h = 460;
      var left = Math.max(0, Math.round((window.screenX || 0) + ((window.outerWidth || w) - w) / 2));
      var top = Math.max(0, Math.round((window.screenY || 0) + ((window.outerHeight || h) - h) / 2));
      var popup = null;
      try {
        popup = window.open(cfg.open + "&popup=1", "wechat_login", "popup,width=" + w + ",height=" + h + ",left=" + left + ",top=" + top);
      } catch (e) { popup = null; }
      if (!popup || popup.closed) {
        // Blocked: the same login as a full-page visit.
        window.location.assign(cfg.open);
        return;
      }
      popup.focus();
    });
  }
  window.addEventListener("message", function (e) {
    if (e.origin !== window.location.origin || !e.data || e.data.type !== "wechat_login" || finished) { return; }
    var fromFrame = frameEl !== null && e.source === frameEl.contentWindow;
    if (e.data.status === "frame") {
      if (fromFrame && typeof e.data.token === "string" && e.data.state === frameState) {
        clearTimeout(frameTimer);
        redeemFrame(frameGen, frameState, e.data.token, 0);
      }
    } else if (e.data.status === "confirmed" && !fromFrame) {
      finish(e.data.redirect, false);
    } else if (e.data.status === "error") {
      var text = typeof e.data.message === "string" && e.data.message ? e.data.message : T.error;
      if (fromFrame) { frameFailed(text); } else { setStatus(text, "err"); }
    }
  });
  if (frameBox && embedCfg && !frameBox.hidden) { embed(); }

  // The sandbox's stand-in for a phone: it scans the code on screen as the
  // chosen test user. A scan waiting for confirmation in chat is confirmed
  // by replying the six-digit code that the scan's chat reply carried; the
  // reply is read once the scan's answer is in (the page may learn of the
  // scan a moment before).
  var sandbox = $("wl-sandbox");
  var lastScan = null;
  if (sandbox && cfg.sandbox) {
    var phone = function (body) {
      return fetch(cfg.sandbox, { method: "POST", body: body, credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (j) {
          if (j.error && !finished) { setStatus(j.error, "err"); }
          return j;
        })
        .catch(function () { if (!finished) { setStatus(T.error, "err"); } return {}; });
    };
    sandbox.addEventListener("submit", function (e) {
      e.preventDefault();
      if (!code || (state !== "waiting" && state !== "scanned")) { return; }
      var body = new URLSearchParams();
      body.set("user", $("wl-user").value);
      if (state === "waiting" && code.code) {
        // Code login: the phone follows the account and sends the code.
        body.set("send", code.code);
        lastScan = phone(body);
        return;
      }
      body.set("qr", code.qr_content || "");
      if (state === "waiting") {
        lastScan = phone(body);
        return;
      }
      (lastScan || Promise.resolve({})).then(function (scan) {
        var m = /(?:^|\D)(\d{6})(?!\d)/.exec((scan && scan.reply) || "");
        if (!m) { if (!finished) { setStatus(T.error, "err"); } return; }
        body.set("reply", m[1]);
        phone(body);
      });
    });
  }

  // On a phone's browser the code cannot be scanned from its own screen:
  // it can be saved as a picture and scanned from the album in WeChat, or
  // the page opened in WeChat. The picture is drawn from our own SVG, so
  // nothing is fetched from elsewhere.
  var saveBtn = $("wl-save"), copyBtn = $("wl-copy");
  if (saveBtn && img) {
    img.addEventListener("load", function () {
      saveBtn.disabled = false;
    });
    saveBtn.addEventListener("click", function () {
      var size = 640, canvas = document.createElement("canvas");
      canvas.width = size; canvas.height = size;
      var ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, size, size);
      ctx.drawImage(img, 0, 0, size, size);
      var a = document.createElement("a");
      a.href = canvas.toDataURL("image/png");
      a.download = "wechat-login.png";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setStatus(T.saved, "info");
    });
  }
  if (copyBtn) {
    copyBtn.addEventListener("click", function () {
      var done = function () { setStatus(T.copied, "info"); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(window.location.href).then(done, function () { window.prompt("", window.location.href); });
      } else {
        window.prompt("", window.location.href);
      }
    });
  }

  // A site with website login only has no QR code to get.
  if (box) { create(); }
})();
