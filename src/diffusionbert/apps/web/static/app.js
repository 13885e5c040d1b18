// The live page: sends one request, draws every denoising state it streams back, then lets the person replay them.
// Everything here is per tab: two tabs hold two separate conversations, streams and replays.
"use strict";

const $ = (id) => document.getElementById(id);
const MODE_LABELS = {
  unconditional: "Unconditional", prompt: "Prompt", infill: "Infill", source: "Source → text", chat: "Chat",
};

const page = {
  info: null,        // what the model offers (GET /api/model)
  mode: null,
  states: [],        // token strings of the text positions, one array per state (0: before the first step)
  revealedAt: [],    // per state, per position: the state index that revealed its token (null: masked, 0: given)
  shown: 0,          // the state on screen while playing
  timer: null,
  done: null,        // the done event, once it arrived
  controller: null,  // aborts the running request
  live: true,
  conversation: [],  // the chat so far: {role, content}
  pendingMessage: null,
  expected: 1,       // the steps asked for: the colour scale while the states stream in
};

function setPhase(phase, status) {
  document.body.dataset.phase = phase;
  $("status").textContent = status;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function init() {
  const response = await fetch("/api/model");
  page.info = await response.json();
  const info = page.info;
  $("model-title").textContent = info.title;
  document.title = `diffusionbert · ${info.title}`;
  for (const mode of info.modes) {
    const tab = document.createElement("button");
    tab.type = "button";
    tab.role = "tab";
    tab.id = `mode-${mode}`;
    tab.textContent = MODE_LABELS[mode] || mode;
    tab.addEventListener("click", () => selectMode(mode));
    $("modes").appendChild(tab);
  }
  for (const name of info.samplers) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    $("sampler").appendChild(option);
  }
  // every control opens on the model's own decoding (its decoding.json), and only what applies is shown
  const decoding = info.decoding;
  $("sampler").value = decoding.sampler;
  $("steps").value = decoding.steps;
  $("steps").max = info.max_steps;
  $("length").max = info.window;
  $("block-length").value = decoding.block_length ?? "";
  $("temperature").value = decoding.temperature;
  $("top-k").value = decoding.top_k;
  $("top-p").value = decoding.top_p;
  $("guidance").value = decoding.guidance;
  $("seed").value = decoding.seed;
  const supports = info.supports;
  for (const [name, shown] of [["steps-only", supports.steps], ["sharpening", supports.sharpening],
    ["live-only", supports.live], ["blocks-only", supports.blocks], ["guidance-only", supports.guidance]]) {
    for (const element of document.querySelectorAll(`.${name}`)) element.classList.toggle("hidden", !shown);
  }
  $("generate").addEventListener("click", start);
  for (const id of ["prompt-text", "infill-text", "source-text", "chat-text"]) {
    $(id).addEventListener("keydown", (event) => {  // Enter sends, Shift+Enter breaks the line
      if (event.key === "Enter" && !event.shiftKey && !$("generate").disabled) {
        event.preventDefault();
        start();
      }
    });
  }
  $("stop").addEventListener("click", () => page.controller && page.controller.abort());
  $("step-slider").addEventListener("input", () => render(Number($("step-slider").value)));
  $("chat-reset").addEventListener("click", () => { page.conversation = []; drawConversation(); });
  selectMode(info.main_mode);
  $("generate").disabled = false;
  setPhase("idle", "");
}

function selectMode(mode) {
  page.mode = mode;
  for (const tab of $("modes").children) tab.setAttribute("aria-selected", String(tab.id === `mode-${mode}`));
  for (const element of document.querySelectorAll(".mode-input")) {
    element.classList.toggle("active", element.dataset.mode === mode);
  }
  $("length").value = page.info.default_length[mode];
  const conditioned = ["source", "chat"].includes(mode);  // guidance contrasts a source with none
  for (const element of document.querySelectorAll(".guidance-only")) {
    element.classList.toggle("off-mode", !conditioned);
  }
}

function numberOrNull(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function requestBody() {
  const supports = page.info.supports;
  const body = {
    mode: page.mode,
    sampler: $("sampler").value,
    length: numberOrNull("length"),
    seed: numberOrNull("seed"),
  };
  if (supports.steps) body.steps = numberOrNull("steps");
  if (supports.blocks) body.block_length = numberOrNull("block-length");
  if (supports.guidance && ["source", "chat"].includes(page.mode)) body.guidance = numberOrNull("guidance");
  if (supports.sharpening) {
    body.temperature = numberOrNull("temperature");
    body.top_k = numberOrNull("top-k");
    body.top_p = numberOrNull("top-p");
  }
  if (["prompt", "infill", "source"].includes(page.mode)) body.text = $(`${page.mode}-text`).value;
  if (page.mode === "chat") {
    page.pendingMessage = { role: "user", content: $("chat-text").value };
    body.messages = [...page.conversation, page.pendingMessage];
  }
  return body;
}

async function start() {
  $("error").hidden = true;
  $("result").hidden = true;
  clearTimeout(page.timer);
  page.timer = null;
  page.states = [];
  page.revealedAt = [];
  page.shown = 0;
  page.done = null;
  page.expected = numberOrNull("steps") || 1;
  $("canvas").replaceChildren();
  $("step-slider").disabled = true;
  $("step-label").textContent = "";
  $("generate").disabled = true;
  $("stop").disabled = false;
  setPhase("waiting", "sending…");
  page.controller = new AbortController();
  try {
    const response = await fetch("/api/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
      signal: page.controller.signal,
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
      fail(answer.error);
      return;
    }
    await readEvents(response.body.getReader());
    if (!page.done && document.body.dataset.phase !== "error") fail("the server closed the stream early");
  } catch (error) {
    if (error.name === "AbortError") {
      clearTimeout(page.timer);
      setPhase("stopped", "stopped");
      finishButtons();
    } else {
      fail(`the connection failed: ${error.message}`);
    }
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      handle(kind, JSON.parse(data));
    }
  }
}

function handle(kind, data) {
  if (kind === "queued") {
    const ahead = data.ahead;
    setPhase("waiting", ahead ? `waiting: ${ahead} request${ahead > 1 ? "s" : ""} ahead in the queue` : "starting…");
  } else if (kind === "start") {
    page.live = data.live;
    if (data.live) {
      page.states.push(data.tokens);
      page.revealedAt.push(data.tokens.map((token) => (token === page.info.mask_token ? null : 0)));
      render(0);
    } else {
      $("canvas").textContent = "This model does not decode through masked states (it writes left to right, " +
        "or in embedding space): only its final text is shown.";
    }
    const dropped = data.dropped ? ` (the ${data.dropped} oldest messages left out to fit the model)` : "";
    setPhase("running", `denoising…${dropped}`);
  } else if (kind === "step") {
    const index = page.states.length;
    const state = page.states[index - 1].slice();
    const revealed = page.revealedAt[index - 1].slice();
    for (const [position, token] of data.changes) {
      state[position] = token;
      revealed[position] = token === page.info.mask_token ? null : index;
    }
    page.states.push(state);
    page.revealedAt.push(revealed);
    play();
  } else if (kind === "done") {
    page.done = data;
    if (!page.live || page.shown === page.states.length - 1) finish();
  } else if (kind === "error") {
    fail(data.message);
  }
}

function pace() {
  return Number($("pace").value);
}

function play() {
  if (page.timer !== null) return;
  const tick = () => {
    page.timer = null;
    const last = page.states.length - 1;
    if (page.shown < last) {
      page.shown = pace() === 0 ? last : page.shown + 1;
      render(page.shown);
    }
    if (page.shown < page.states.length - 1) page.timer = setTimeout(tick, pace());
    else if (page.done) finish();
  };
  page.timer = setTimeout(tick, pace());
}

function colour(index, count) {
  const fraction = count > 1 ? (index - 1) / (count - 1) : 0;
  return `hsl(${Math.round(220 - 220 * fraction)} 75% 80%)`;
}

function render(index) {
  const tokens = page.states[index];
  const revealed = page.revealedAt[index];
  const made = page.states.length - 1;  // while streaming, colour against the steps asked for
  const count = Math.max(page.done ? made : Math.max(made, page.expected), 1);
  const spans = [];
  let ended = false;
  tokens.forEach((token, position) => {
    const span = document.createElement("span");
    span.className = "tok";
    if (token === page.info.mask_token) {
      span.classList.add("blank");
      span.title = "masked";
    } else if (token === page.info.end_token) {
      span.classList.add("end");
      span.textContent = "⏎ end";
    } else {
      const piece = token.startsWith("##");
      span.textContent = piece ? token.slice(2) : token;
      if (piece) span.classList.add("piece");
      if (revealed[position] === 0) span.classList.add("given");
      else {
        span.style.background = colour(revealed[position], count);
        span.title = `revealed at step ${revealed[position]}`;
      }
    }
    if (ended) span.classList.add("after-end");
    if (token === page.info.end_token) ended = true;
    spans.push(span);
  });
  $("canvas").replaceChildren(...spans);
  $("step-label").textContent = `state ${index} of ${page.states.length - 1}`;
  if (page.done) $("step-slider").value = index;
}

function finish() {
  const done = page.done;
  if (page.live) {
    const last = page.states.length - 1;
    $("step-slider").max = last;
    $("step-slider").value = last;
    $("step-slider").disabled = last === 0;
    render(last);
  } else {
    $("canvas").textContent = done.text;
  }
  $("final-text").textContent = done.text;
  $("stats").textContent = `${done.nfe} network calls · ${done.seconds.toFixed(2)} s` +
    (page.live ? ` · ${page.states.length - 1} denoising updates` : "");
  $("result").hidden = false;
  if (page.mode === "chat" && page.pendingMessage) {
    page.conversation.push(page.pendingMessage, { role: "assistant", content: done.text });
    page.pendingMessage = null;
    $("chat-text").value = "";
    drawConversation();
  }
  setPhase("done", "done");
  finishButtons();
}

function fail(message) {
  clearTimeout(page.timer);
  page.timer = null;
  showError(message);
  setPhase("error", "");
  finishButtons();
}

function finishButtons() {
  $("generate").disabled = false;
  $("stop").disabled = true;
  page.controller = null;
}

function drawConversation() {
  const items = page.conversation.map(({ role, content }) => {
    const item = document.createElement("li");
    item.className = role;
    const who = document.createElement("span");
    who.className = "role";
    who.textContent = role === "user" ? "you" : "model";
    item.append(who, document.createTextNode(content));
    return item;
  });
  $("chat-log").replaceChildren(...items);
}

init().catch((error) => {
  showError(`cannot reach the server: ${error.message}`);
  setPhase("error", "");
});
