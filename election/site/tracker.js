/* Ballot tracker: finds a tracking code in the codes embedded in this site, in the browser
   alone (no server, works from file://). codes/index.js calls trackingIndex(prefixes, count,
   texts); codes/<XY>.js, loaded when a code starting with XY is looked up, calls
   trackingShard("XY", {code: [station, batch, kind]}). */
"use strict";
(function () {
  var prefixes = null;
  var kindTexts = {};
  var shards = {};
  var waiting = {};
  var PREFIX = 2;
  var LENGTH = 16;

  window.trackingIndex = function (list, count, texts) {
    prefixes = new Set(list);
    kindTexts = texts;
  };

  window.trackingShard = function (prefix, codes) {
    shards[prefix] = codes;
    var callbacks = waiting[prefix] || [];
    delete waiting[prefix];
    callbacks.forEach(function (callback) { callback(codes); });
  };

  /* The same rule as election lookup (election.chain.normalise_tracking_code): any case,
     spaces, hyphens and dashes, full-width letters and digits (NFKC makes them ASCII). The
     alphabet ABCDEFGHJKLMNPQRSTUVWXYZ23456789 has no I, O, 0 or 1: typed ones are named as a
     typo ("typo": those characters, sorted, once each), never guessed at. */
  var NEVER = "01IO";
  function normalise(text) {
    var letters = text.normalize("NFKC").toUpperCase().replace(/[^A-Z0-9]/g, "");
    var typo = NEVER.split("").filter(function (ch) { return letters.indexOf(ch) >= 0; }).join("");
    var groups = [];
    for (var i = 0; i < letters.length; i += 4) groups.push(letters.slice(i, i + 4));
    return { letters: letters, code: typo ? null : groups.join("-"), typo: typo };
  }
  window.normaliseTrackingCode = function (text) {
    var typed = normalise(text);
    return { code: typed.code, typo: typed.typo };
  };

  function loadShard(prefix) {
    return new Promise(function (resolve) {
      if (Object.prototype.hasOwnProperty.call(shards, prefix)) return resolve(shards[prefix]);
      if (!prefixes || !prefixes.has(prefix)) return resolve({});
      var queue = waiting[prefix] || (waiting[prefix] = []);
      queue.push(resolve);
      if (queue.length > 1) return;
      var script = document.createElement("script");
      script.src = "codes/" + prefix + ".js";
      script.onerror = function () {
        var callbacks = waiting[prefix] || [];
        delete waiting[prefix];
        callbacks.forEach(function (callback) { callback(null); });
      };
      document.body.appendChild(script);
    });
  }

  function line(parent, lang, text, tag) {
    var element = document.createElement(tag || "p");
    element.lang = lang;
    element.className = lang;
    element.textContent = text;
    parent.appendChild(element);
    return element;
  }

  function show(state, ja, en, detail) {
    var answer = document.getElementById("answer");
    answer.replaceChildren();
    answer.dataset.result = state;
    answer.className = "answer " + state;
    var heading = document.createElement("div");
    heading.className = "answer-heading";
    line(heading, "ja", ja);
    line(heading, "en", en);
    answer.appendChild(heading);
    if (detail) answer.appendChild(detail);
  }

  function found(code, where) {
    var station = where[0], batch = where[1], kind = where[2];
    var texts = kindTexts[kind] || { ja: kind, en: kind };
    var list = document.createElement("dl");
    [
      ["追跡コード / Tracking code", code],
      ["投票所 / Station", station],
      ["一括 / Batch", String(batch)],
      ["状態 / Status", texts.ja + " / " + texts.en],
    ].forEach(function (pair) {
      var term = document.createElement("dt");
      term.textContent = pair[0];
      var value = document.createElement("dd");
      value.textContent = pair[1];
      list.append(term, value);
    });
    show("found", "見つかりました：あなたの票は記録にあります。", "Found: your ballot is in the record.", list);
  }

  function lookup(text) {
    var typed = normalise(text);
    if (!typed.letters) {
      show("empty", "追跡コードを入力してください。", "Please type a tracking code.");
      return Promise.resolve();
    }
    if (typed.typo) {
      var named = typed.typo.split("").join("、");
      show("typo", "入力を確かめてください：追跡コードに " + named + " は使われません。",
           "Please check what you typed: a tracking code never contains " + typed.typo.split("").join(", ") +
           " (letters A–Z without I and O, digits 2–9).");
      return Promise.resolve();
    }
    if (typed.letters.length !== LENGTH) {
      show("not-found", "見つかりません：追跡コードは16文字です（" + typed.letters.length + "文字入力されました）。",
           "Not found: a tracking code has 16 letters and digits; you typed " + typed.letters.length + ".");
      return Promise.resolve();
    }
    show("searching", "検索中…", "Searching…");
    return loadShard(typed.letters.slice(0, PREFIX)).then(function (codes) {
      if (codes === null) {
        show("error", "追跡コードのファイルを読み込めません。", "The site's tracking code file cannot be loaded.");
      } else if (Object.prototype.hasOwnProperty.call(codes, typed.code)) {
        found(typed.code, codes[typed.code]);
      } else {
        show("not-found", "見つかりません：" + typed.code + " はこの記録にありません。入力を確かめてください。",
             "Not found: " + typed.code + " is not in this record. Please check what you typed.");
      }
    });
  }

  document.getElementById("track-form").addEventListener("submit", function (event) {
    event.preventDefault();
    lookup(document.getElementById("code").value);
  });
})();
