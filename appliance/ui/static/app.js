// The kiosk page: draws the booth's view and sends what the voter does. It holds no secret:
// the PIN goes straight to the booth and is not kept; keys, tokens and nonces never come here.
//
// Every screen is a body (which may scroll, with a "more below" cue) above an action bar that
// always stays on screen (PIN pad, Next/Back, Cast/Challenge, Finish). A long contest pages
// its candidates instead of scrolling. The words are in messages.json (one catalogue, plural
// and counter forms by Intl.PluralRules, never by string concatenation).
"use strict";

const ERRORS = ["card_locked", "card_invalid", "card_check_unavailable", "not_eligible", "already_voted", "polls_closed", "card_removed",
  "out_of_service", "session_error", "timed_out"];
const HELP = { idle: "help_idle", pin: "help_pin", wrong_pin: "help_pin", ballot: "help_ballot", review: "help_review", sealed: "help_sealed" };

let MESSAGES = null;
let election = null;
let state = null;
let version = -1;
let candidatePage = { contest: null, page: 0 };

async function send(event) {
  await fetch("/api/event", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(event) });
}
const tap = (target) => send({ kind: "tap", target });

// --- words ------------------------------------------------------------------------------------

function lang() { return (state && state.view.language) || "ja"; }

/** The catalogue's text for key, with {placeholders} filled; plural forms chosen by {n}. */
function t(key, params = {}) {
  const language = lang();
  let message = MESSAGES[language][key] ?? MESSAGES.en[key] ?? key;
  if (typeof message === "object") {
    const n = params.n;
    message = message[`=${n}`] ?? message[new Intl.PluralRules(language).select(n)] ?? message.other;
  }
  return message.replace(/\{(\w+)\}/g, (_, name) => String(params[name]));
}

function name(item) { return item.name[lang()] || item.name.en; }

// --- elements -------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

/** A touch acts only if it starts and ends on the same target (no action on a slide off it). */
function activate(node, action) {
  node.addEventListener("pointerdown", (e) => { node.dataset.armed = String(e.pointerId); node.releasePointerCapture?.(e.pointerId); });
  const disarm = () => { delete node.dataset.armed; };
  node.addEventListener("pointerleave", disarm);
  node.addEventListener("pointercancel", disarm);
  node.addEventListener("pointerup", (e) => {
    const armed = node.dataset.armed === String(e.pointerId);
    disarm();
    const rect = node.getBoundingClientRect();
    const inside = e.clientX >= rect.left && e.clientX <= rect.right && e.clientY >= rect.top && e.clientY <= rect.bottom;
    if (armed && inside && !node.disabled) action();
  });
  node.addEventListener("click", (e) => e.preventDefault());
  return node;
}

function localButton(label, action, attrs = {}) {
  return activate(el("button", { type: "button", ...attrs }, label), action);
}

/** A button for one of the session's targets (the keypad's focus walks the same list). */
function targetButton(target, label, kind = "") {
  const focused = state.view.keypad && state.view.focus === target;
  const classes = [kind, focused ? "focus" : ""].join(" ").trim();
  return localButton(label, () => tap(target), { id: `t-${target.replaceAll(":", "-")}`, class: classes });
}

// --- screens: each returns { body: [...], actions: [...] } -----------------------------------

function pinScreen(view) {
  const input = el("input", { id: "pin", type: "password", inputmode: "none", autocomplete: "off", maxlength: "16", "aria-label": t("pin") });
  const submit = () => { const secret = input.value; input.value = ""; send({ kind: "pin", secret }); };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); e.stopPropagation(); submit(); } });
  const pad = el("div", { class: "keypad", id: "keypad" });
  for (const digit of ["1", "2", "3", "4", "5", "6", "7", "8", "9"]) pad.append(localButton(digit, () => { input.value += digit; }, { id: `pin-${digit}` }));
  pad.append(localButton(t("clear"), () => { input.value = ""; }, { id: "pin-clear" }));
  pad.append(localButton("0", () => { input.value += "0"; }, { id: "pin-0" }));
  pad.append(localButton(t("ok"), submit, { id: "pin-ok", class: "primary" }));
  const left = el("div", { class: "pin-left" }, el("h1", {}, t("pin")));
  if (view.screen === "pin" && view.tries_left != null && view.max_tries != null && view.tries_left < view.max_tries) {
    left.append(el("p", { class: "error", id: "tries-left" }, t("tries_left", { n: view.tries_left })));  // known before typing
  }
  if (view.screen === "wrong_pin") {
    const text = view.pin_format_error || view.tries_left == null ? t("pin_format") : t("wrong_pin", { n: view.tries_left });
    left.append(el("p", { class: "error", id: "pin-error" }, text));
  }
  if (view.pin_entry) {
    const entry = view.pin_entry;
    const dots = "●".repeat(entry.entered) + "○".repeat(entry.length - entry.entered);
    left.append(el("div", { class: "pin-keypad", id: "pin-keypad" },
      el("span", { class: "dots", "aria-label": t("pin_entered", { n: entry.entered, length: entry.length }) }, dots),
      el("span", { class: "wheel" }, `${t("pin_digit")}: `, el("b", { id: "pin-wheel" }, String(entry.digit)))),
      el("p", { class: "small" }, t("pin_keypad")));
  } else {
    left.append(input);
    setTimeout(() => input.focus(), 0);
  }
  left.append(targetButton("cancel", t("cancel")));
  return { body: [el("div", { class: "pin-layout" }, left, pad)], actions: [], bare: true };
}

function ballotScreen(view) {
  const contest = election.contests[view.contest_index];
  const marks = view.choices[contest.id] || [];
  if (candidatePage.contest !== contest.id) candidatePage = { contest: contest.id, page: 0 };
  const head = el("div", { class: "contest-head" },
    el("span", { class: "meta" }, t("contest_of", { i: view.contest_index + 1, n: election.contests.length })),
    el("h1", {}, name(contest)),
    el("span", { class: "meta", id: "choose" }, `${t("choose_up_to", { n: contest.limit })} · ${t("chosen_count", { n: marks.length, limit: contest.limit })}`));
  const body = [head];
  const list = el("div", { class: "choices", id: "choices" });
  for (const selection of contest.selections) {
    const target = `select:${contest.id}:${selection.id}`;
    const chosen = marks.includes(selection.id);
    const b = targetButton(target, "", "choice");
    b.append(el("span", { class: "box", "aria-hidden": "true" }, chosen ? "✔" : ""), el("span", { class: "label" }, name(selection)));
    b.setAttribute("aria-pressed", chosen ? "true" : "false");
    b.dataset.target = target;
    list.append(b);
  }
  body.push(list);
  const moves = view.screen_targets.filter((x) => !x.startsWith("select:"));
  const pager = {
    prev: localButton(t("prev_candidates"), () => { candidatePage.page -= 1; render(state); }, { id: "page-prev", class: "pager-button", hidden: "" }),
    next: localButton("", () => { candidatePage.page += 1; render(state); }, { id: "page-next", class: "pager-button more", hidden: "" }),
    of: el("span", { class: "meta page-of", id: "page-of" }),
  };
  head.append(pager.of);
  const actions = [
    ...moves.filter((x) => x === "previous").map((x) => targetButton(x, t(x))),
    el("span", { class: "spacer" }), pager.prev, pager.next,
    ...moves.filter((x) => x !== "previous").map((x) => targetButton(x, t(x), "primary")),
  ];
  return { body, actions, after: () => paginate(list, pager, view) };
}

/** Show as many candidates as fit; the rest on pages with a visible "more candidates" cue. */
function paginate(list, pager, view) {
  const buttons = [...list.children];
  if (list.scrollHeight <= list.clientHeight + 1) return;
  // Draw the pager's words first (a stand-in of their longest form): they may wrap the head.
  const count = buttons.length;
  pager.of.textContent = t("page_of", { from: count, to: count, n: count });
  pager.next.textContent = t("more_candidates", { n: count });
  pager.prev.hidden = pager.next.hidden = false;
  const gap = parseFloat(getComputedStyle(list).rowGap) || 0;
  const row = buttons[0].offsetHeight + gap;
  const style = getComputedStyle(list);
  const inner = list.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  let perPage = Math.max(1, Math.floor((inner + gap) / row));
  const fits = (n) => {
    buttons.forEach((b, i) => { b.hidden = i >= n; });
    const last = buttons[n - 1].getBoundingClientRect().bottom;
    return last <= list.getBoundingClientRect().bottom - parseFloat(style.paddingBottom) + 0.5;
  };
  while (perPage > 1 && !fits(perPage)) perPage -= 1;  // labels that wrap make some rows taller
  const pages = Math.ceil(buttons.length / perPage);
  const focusIndex = buttons.findIndex((b) => b.dataset.target === view.focus);
  if (view.keypad && focusIndex >= 0) candidatePage.page = Math.floor(focusIndex / perPage);
  candidatePage.page = Math.min(candidatePage.page, pages - 1);
  const page = candidatePage.page;
  buttons.forEach((b, i) => { b.hidden = i < page * perPage || i >= (page + 1) * perPage; });
  const from = page * perPage + 1;
  const to = Math.min(buttons.length, (page + 1) * perPage);
  const rest = buttons.length - to;
  pager.prev.hidden = pager.next.hidden = false;
  pager.prev.disabled = page === 0;
  pager.next.disabled = rest <= 0;
  pager.next.textContent = t("more_candidates", { n: rest });
  pager.of.textContent = t("page_of", { from, to, n: buttons.length });
}

function choiceList(choices, undervotes = []) {
  return election.contests.map((contest) => {
    const marks = (choices[contest.id] || []).map((id) => name(contest.selections.find((s) => s.id === id)));
    const row = el("div", { class: "contest" + (undervotes.includes(contest.id) ? " under" : "") },
      el("h2", {}, name(contest)), el("p", { class: "marks" }, marks.length ? marks.join(lang() === "ja" ? "、" : ", ") : t("none")));
    return row;
  });
}

function reviewScreen(view) {
  const body = [el("h1", {}, t("review_title"))];
  const under = election.contests.filter((c) => view.undervotes.includes(c.id));
  if (under.length) {
    const notice = el("div", { class: "notice", id: "undervote", role: "status" }, el("p", {}, t("undervote_title")));
    for (const contest of under) {
      const n = (view.choices[contest.id] || []).length;
      notice.append(el("p", { class: "small" }, t("undervote_item", { name: name(contest), n, limit: contest.limit })));
    }
    body.push(notice);
  }
  body.push(...choiceList(view.choices, view.undervotes));
  return { body, actions: [targetButton("change", t("change")), targetButton("seal", t("seal"), "primary")] };
}

function receiptScreen(view, qr) {
  // The tracking code derives from the ballot: known at once. What is said about the ballot's
  // journey claims only what is true: kept here until the station's ledger holds it.
  const text = el("div", { class: "receipt-text" }, el("h1", {}, t("receipt_title")));
  const body = [el("div", { class: "receipt" }, text)];
  text.append(el("p", { class: "small" }, t("tracking")), el("p", { class: "code", id: "tracking-code" }, view.tracking_code));
  body[0].append(el("img", { class: "qr", id: "tracking-qr", src: qr, alt: view.tracking_code }));
  text.append(el("p", { id: `receipt-${view.receipt}` }, t(`receipt_${view.receipt}`)));
  text.append(el("p", { class: "small" }, t("receipt_text")));
  return { body, actions: [targetButton("done", t("done"), "primary")] };
}

function screenFor(view) {
  const screen = view.screen;
  if (view.busy) return { body: [el("h1", {}, t(screen === "checking_card" ? "checking_card" : "wait"))], actions: [] };
  if (screen === "idle") return { body: [el("h1", {}, view.card_present ? t("idle_take") : t("idle")), el("p", { class: "small" }, t("idle_hint"))], actions: [] };
  if (screen === "pin" || screen === "wrong_pin") return pinScreen(view);
  if (screen === "ballot") return ballotScreen(view);
  if (screen === "review") return reviewScreen(view);
  if (screen === "sealed") return { body: [el("h1", {}, t("sealed_title")), el("p", {}, t("sealed_text"))], actions: [targetButton("challenge", t("challenge")), targetButton("cast", t("cast"), "primary")] };
  if (screen === "spoiled") return { body: [el("h1", {}, t("spoiled_title")), el("p", {}, t("spoiled_text")), ...choiceList(view.opened_choices || {})], actions: [targetButton("vote_again", t("vote_again"), "primary")] };
  if (screen === "receipt") return receiptScreen(view, state.qr);
  if (screen === "hub_unreachable") return { body: [el("h1", {}, t(view.unreachable)), el("p", {}, t(`${view.unreachable}_text`))], actions: [targetButton("cancel", t("cancel")), targetButton("retry", t("retry"), "primary")] };
  const actions = view.screen_targets.includes("done") ? [targetButton("done", t("done"), "primary")] : [];
  return { body: [el("h1", {}, t(screen)), el("p", {}, t(`${screen}_text`))], actions };
}

function overlayFor(view) {
  if (view.notice && view.notice.kind === "overvote") {
    const contest = election.contests.find((c) => c.id === view.notice.contest);
    const wanted = contest && contest.selections.find((s) => s.id === view.notice.selection);
    return el("div", { class: "dialog", id: "overvote", role: "alertdialog" },
      el("p", {}, t("overvote", { n: view.notice.limit, limit: view.notice.limit, name: wanted ? name(wanted) : "" })),
      targetButton("dismiss", t("ok"), "primary"));
  }
  if (view.timeout_warning != null) {
    return el("div", { class: "dialog", id: "timeout-warning", role: "alertdialog" },
      el("h1", {}, t("warning_title")), el("p", { id: "countdown" }, t("warning_text", { n: view.timeout_warning })),
      targetButton("stay", t("stay"), "primary"));
  }
  if (view.help) {
    return el("div", { class: "dialog", id: "help-dialog", role: "dialog" },
      el("h1", {}, t("help_title")), el("p", {}, t(HELP[view.screen] || "help_other")), el("p", { class: "small" }, t("help_keys")),
      settingsGrid(view), targetButton("close_help", t("close_help"), "primary"));
  }
  return null;
}

/** The help dialog's settings (the keypad reaches them with ▲ from "Close"; touch works too). */
function settingsGrid(view) {
  const audio = view.audio || {};
  const labels = {
    "audio:repeat": t("audio_repeat"),
    "audio:pause": t(audio.paused ? "audio_resume" : "audio_pause"),
    "set:language": t("setting_language"),
    "set:text_size": t("setting_text_size", { n: view.text_size || 1 }),
    "set:contrast": t(view.theme === "low" ? "contrast_low" : "contrast_high"),
    "set:audio": t(audio.on ? "setting_audio_on" : "setting_audio_off"),
    "set:rate": t(`setting_rate_${audio.rate || 2}`),
    "set:volume": t(`setting_volume_${audio.volume || 2}`),
  };
  const grid = el("div", { class: "settings", id: "settings", role: "group", "aria-label": t("settings") });
  for (const target of view.targets.filter((x) => x in labels)) grid.append(targetButton(target, labels[target], "setting-choice"));
  return grid;
}

// --- drawing ------------------------------------------------------------------------------

function render(payload) {
  state = payload;
  const view = state.view;
  document.documentElement.lang = view.language;
  document.body.className = `theme-${view.theme || "high"} size-${view.text_size || 1}`;
  document.getElementById("title").textContent = name(election);
  document.getElementById("text-size").textContent = t("text_size", { n: view.text_size || 1 });
  document.getElementById("contrast").textContent = t(view.theme === "low" ? "contrast_low" : "contrast_high");
  document.getElementById("help").textContent = t("help");
  for (const code of ["ja", "en"]) document.getElementById(`lang-${code}`).setAttribute("aria-pressed", String(view.language === code));
  const screen = document.getElementById("screen");
  screen.className = ERRORS.includes(view.screen) ? "error" : "";
  screen.dataset.screen = view.screen;
  const drawn = screenFor(view);
  const body = el("div", { class: "body" + (drawn.bare ? " bare" : ""), id: "body" }, ...drawn.body);
  const cue = el("div", { class: "more-below", id: "more-below", hidden: "" }, t("more_below"));
  const nodes = [body, cue];
  if (drawn.actions.length) nodes.push(el("div", { class: "actions", id: "actions" }, ...drawn.actions));
  screen.replaceChildren(...nodes);
  if (drawn.after) drawn.after();
  const updateCue = () => { cue.hidden = body.scrollTop + body.clientHeight >= body.scrollHeight - 2; };
  body.addEventListener("scroll", updateCue);
  updateCue();
  const overlay = document.getElementById("overlay");
  const dialog = overlayFor(view);
  overlay.hidden = dialog === null;
  overlay.replaceChildren(...(dialog ? [dialog] : []));
}

document.addEventListener("keydown", (event) => {
  // The page's keyboard stands in for the companion keypad (arrows, Enter, Escape, F1 or ?).
  const keys = { ArrowUp: "up", ArrowDown: "down", Enter: "select", Escape: "back", F1: "help", "?": "help" };
  if (!keys[event.key] || (event.target.id === "pin" && event.key === "Enter")) return;
  event.preventDefault();
  send({ kind: "key", key: keys[event.key] });
});

function setting(id, action) { activate(document.getElementById(id), action); }
setting("lang-ja", () => send({ kind: "language", code: "ja" }));
setting("lang-en", () => send({ kind: "language", code: "en" }));
setting("text-size", () => send({ kind: "text_size", level: String(((state?.view.text_size || 1) % 4) + 1) }));
setting("contrast", () => send({ kind: "theme", name: state?.view.theme === "low" ? "high" : "low" }));
setting("help", () => send({ kind: "key", key: "help" }));
window.addEventListener("resize", () => { if (state) render(state); });
document.fonts.addEventListener("loadingdone", () => { if (state) render(state); });  // heights change once Noto CJK is in

async function poll() {
  for (;;) {
    try {
      const response = await fetch(`/api/state?after=${version}`);
      const payload = await response.json();
      if (payload.version !== version) { version = payload.version; render(payload); }
    } catch (error) {
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

(async () => {
  [MESSAGES, election] = await Promise.all([(await fetch("/static/messages.json")).json(), (await fetch("/api/election")).json()]);
  poll();
})();
