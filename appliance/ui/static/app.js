// The kiosk page: draws the booth's view and sends what the voter does. It holds no secret:
// the PIN goes straight to the booth and is not kept; keys, tokens and nonces never come here.
"use strict";

const TEXT = {
  ja: {
    idle: "投票カードをリーダーにかざしてください", idle_take: "カードをお取りください",
    pin: "暗証番号（4桁）を入力してください", ok: "決定", clear: "訂正", cancel: "中止",
    wrong_pin: (n) => `暗証番号が違います。残り ${n} 回です。`, pin_format: "暗証番号は数字4桁です。",
    wait: "お待ちください…", contest_of: (i, n) => `${i} / ${n}`, choose_up_to: (n) => `${n} 名まで選べます`,
    next: "次へ", previous: "前へ", review: "確認へ", review_title: "選んだ内容の確認", none: "（選択なし）",
    seal: "この内容で暗号化する", change: "修正する",
    sealed_title: "投票は暗号化されました", sealed_text: "このまま投票するか、暗号化が正しいか確認（チャレンジ）できます。確認した投票は無効になり、もう一度投票します。",
    cast: "投票する", challenge: "確認する（チャレンジ）",
    spoiled_title: "確認用に無効にした投票", spoiled_text: "この投票は次の内容を暗号化していました。この投票は数えられません。もう一度投票してください。",
    vote_again: "もう一度投票する",
    receipt_title: "投票しました", tracking: "追跡コード", receipt_text: "公開される記録でこのコードを検索すると、投票が数えられたことを確認できます。",
    stored: "投票は安全に保存され、集計所へ届けられます。追跡コードは届いたときに表示されます。",
    stored_later: "あとで、次の投票ハッシュで追跡コードを調べることができます：", hub_down: "現在、集計所と通信できません。",
    done: "終了",
    card_locked: "カードがロックされています", card_locked_text: "暗証番号を続けて間違えたため、カードが使えません。係員にお知らせください。",
    card_invalid: "このカードは使えません", card_invalid_text: "カードの証明書が無効、期限切れ、または読み取れません。係員にお知らせください。",
    not_eligible: "この投票所の選挙人名簿に登録がありません", not_eligible_text: "係員にお知らせください。",
    already_voted: "すでに投票済みです", already_voted_text: "この選挙ではすでに投票されています。係員にお知らせください。",
    polls_closed: "投票時間外です", polls_closed_text: "現在、投票を受け付けていません。",
    hub_unreachable: "集計所と通信できません", hub_unreachable_text: "名簿の確認ができません。しばらくしてからもう一度お試しください。",
    retry: "もう一度試す",
    card_removed: "カードが取り外されました", card_removed_text: "投票は中止されました。選んだ内容は消去されました。投票されていません。",
    out_of_service: "この投票機は使用できません", out_of_service_text: "係員にお知らせください。",
  },
  en: {
    idle: "Hold your card to the reader", idle_take: "Please take your card",
    pin: "Enter your 4-digit PIN", ok: "OK", clear: "Clear", cancel: "Cancel",
    wrong_pin: (n) => `Wrong PIN. ${n} tries left.`, pin_format: "The PIN is 4 digits.",
    wait: "Please wait…", contest_of: (i, n) => `${i} of ${n}`, choose_up_to: (n) => `Choose up to ${n}`,
    next: "Next", previous: "Back", review: "Review", review_title: "Check your choices", none: "(no choice)",
    seal: "Encrypt my ballot", change: "Change",
    sealed_title: "Your ballot is encrypted", sealed_text: "Cast it now, or challenge it to check the encryption. A challenged ballot is not counted and you vote again.",
    cast: "Cast my ballot", challenge: "Challenge",
    spoiled_title: "Challenged ballot (not counted)", spoiled_text: "This ballot encrypted the choices below. It will not be counted. Please vote again.",
    vote_again: "Vote again",
    receipt_title: "Your ballot is cast", tracking: "Tracking code", receipt_text: "Look up this code in the published election record to check that your ballot was counted.",
    stored: "Your ballot is stored safely and will be delivered to the station. The tracking code appears when it arrives.",
    stored_later: "Later, you can look up the tracking code by this ballot hash:", hub_down: "The station cannot be reached right now.",
    done: "Finish",
    card_locked: "Your card is locked", card_locked_text: "The PIN was entered wrongly too many times. Please ask a poll worker.",
    card_invalid: "This card cannot be used", card_invalid_text: "Its certificate is revoked, expired or unreadable. Please ask a poll worker.",
    not_eligible: "You are not on this station's roll", not_eligible_text: "Please ask a poll worker.",
    already_voted: "You have already voted", already_voted_text: "A ballot was already issued for you in this election. Please ask a poll worker.",
    polls_closed: "The polls are not open", polls_closed_text: "Voting is not possible right now.",
    hub_unreachable: "The station cannot be reached", hub_unreachable_text: "Your registration cannot be checked. Please try again in a moment.",
    retry: "Try again",
    card_removed: "The card was removed", card_removed_text: "Voting was cancelled and your choices were erased. No ballot was cast.",
    out_of_service: "This booth is out of service", out_of_service_text: "Please ask a poll worker.",
  },
};
const ERRORS = ["card_locked", "card_invalid", "not_eligible", "already_voted", "polls_closed", "card_removed", "out_of_service"];

let election = null;
let state = null;
let version = -1;

async function send(event) {
  await fetch("/api/event", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(event) });
}
const tap = (target) => send({ kind: "tap", target });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function button(target, label, primary = false) {
  const classes = [primary ? "primary" : "", state.view.focus === target ? "focus" : ""].join(" ").trim();
  return el("button", { id: `t-${target.replaceAll(":", "-")}`, class: classes, onclick: () => tap(target) }, label);
}

function name(item) { return item.name[state.view.language] || item.name.en; }

function choiceList(choices) {
  return election.contests.map((contest) => {
    const marks = (choices[contest.id] || []).map((id) => name(contest.selections.find((s) => s.id === id)));
    return el("div", { class: "contest" }, el("h2", {}, name(contest)), el("p", { class: "marks" }, marks.length ? marks.join("、") : T().none));
  });
}

function T() { return TEXT[state.view.language] || TEXT.ja; }

function pinScreen(view) {
  const input = el("input", { id: "pin", type: "password", inputmode: "numeric", autocomplete: "off", maxlength: "16" });
  const submit = () => { const secret = input.value; input.value = ""; send({ kind: "pin", secret }); };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); e.stopPropagation(); submit(); } });
  const pad = el("div", { class: "keypad" });
  for (const digit of ["1", "2", "3", "4", "5", "6", "7", "8", "9"]) pad.append(el("button", { onclick: () => { input.value += digit; } }, digit));
  pad.append(el("button", { onclick: () => { input.value = ""; } }, T().clear));
  pad.append(el("button", { onclick: () => { input.value += "0"; } }, "0"));
  pad.append(el("button", { id: "pin-ok", class: "primary", onclick: submit }, T().ok));
  const nodes = [el("h1", {}, T().pin)];
  if (view.screen === "wrong_pin") {
    nodes.push(el("p", { class: "error", id: "pin-error" }, view.pin_format_error ? T().pin_format : T().wrong_pin(view.tries_left)));
  }
  nodes.push(input, pad, button("cancel", T().cancel));
  setTimeout(() => input.focus(), 0);
  return nodes;
}

function ballotScreen(view) {
  const contest = election.contests[view.contest_index];
  const marks = view.choices[contest.id] || [];
  const nodes = [
    el("p", {}, T().contest_of(view.contest_index + 1, election.contests.length)),
    el("h1", {}, name(contest)),
    el("p", {}, T().choose_up_to(contest.limit)),
  ];
  for (const selection of contest.selections) {
    const target = `select:${contest.id}:${selection.id}`;
    const b = button(target, name(selection));
    b.classList.add("choice");
    b.setAttribute("aria-pressed", marks.includes(selection.id) ? "true" : "false");
    nodes.push(b);
  }
  for (const target of view.targets.filter((t) => !t.startsWith("select:"))) nodes.push(button(target, T()[target], target !== "previous"));
  return nodes;
}

function receiptScreen(view, qr) {
  const nodes = [el("h1", {}, T().receipt_title)];
  if (view.tracking_code) {
    nodes.push(el("p", {}, T().tracking), el("p", { class: "code", id: "tracking-code" }, view.tracking_code));
    nodes.push(el("img", { class: "qr", id: "tracking-qr", src: qr, alt: view.tracking_code }), el("p", {}, T().receipt_text));
  } else {
    if (!view.hub_online) nodes.push(el("p", { id: "hub-down" }, T().hub_down));
    nodes.push(el("p", { id: "stored" }, T().stored), el("p", {}, T().stored_later), el("p", { class: "hash", id: "ballot-hash" }, view.ballot_hash));
  }
  nodes.push(button("done", T().done, true));
  return nodes;
}

function render(payload) {
  state = payload;
  const view = state.view;
  document.documentElement.lang = view.language;
  document.getElementById("title").textContent = name(election);
  const screen = document.getElementById("screen");
  screen.className = ERRORS.includes(view.screen) ? "error" : "";
  screen.dataset.screen = view.screen;
  let nodes;
  if (view.busy) nodes = [el("h1", {}, T().wait)];
  else if (view.screen === "idle") nodes = [el("h1", {}, view.card_present ? T().idle_take : T().idle)];
  else if (view.screen === "pin" || view.screen === "wrong_pin") nodes = pinScreen(view);
  else if (view.screen === "ballot") nodes = ballotScreen(view);
  else if (view.screen === "review") nodes = [el("h1", {}, T().review_title), ...choiceList(view.choices), button("seal", T().seal, true), button("change", T().change)];
  else if (view.screen === "sealed") nodes = [el("h1", {}, T().sealed_title), el("p", {}, T().sealed_text), button("cast", T().cast, true), button("challenge", T().challenge)];
  else if (view.screen === "spoiled") nodes = [el("h1", {}, T().spoiled_title), el("p", {}, T().spoiled_text), ...choiceList(view.opened_choices || {}), button("vote_again", T().vote_again, true)];
  else if (view.screen === "receipt") nodes = receiptScreen(view, state.qr);
  else if (view.screen === "hub_unreachable") nodes = [el("h1", {}, T().hub_unreachable), el("p", {}, T().hub_unreachable_text), button("retry", T().retry, true), button("cancel", T().cancel)];
  else {
    nodes = [el("h1", {}, T()[view.screen]), el("p", {}, T()[`${view.screen}_text`])];
    if (view.targets.includes("done")) nodes.push(button("done", T().done, true));
  }
  screen.replaceChildren(...nodes);
}

document.addEventListener("keydown", (event) => {
  const keys = { ArrowUp: "up", ArrowDown: "down", Enter: "select", Escape: "back" };
  if (event.target.id === "pin" || !keys[event.key]) return;
  event.preventDefault();
  send({ kind: "key", key: keys[event.key] });
});
document.getElementById("lang-ja").addEventListener("click", () => send({ kind: "language", code: "ja" }));
document.getElementById("lang-en").addEventListener("click", () => send({ kind: "language", code: "en" }));

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
  election = await (await fetch("/api/election")).json();
  poll();
})();
