// The history list: one card per task, newest first, updated in place as events arrive.

const PAN_NAMES = { left: "Pan Left", right: "Pan Right", up: "Pan Up", down: "Pan Down" };
const STATUS_WORDS = {
  SUBMITTED: "Queued",
  IN_PROGRESS: "Running",
  SUCCESS: "Done",
  FAILURE: "Failed",
  MODAL: "Waiting for a mask",
  CANCEL: "Cancelled",
};

// The name a person (and a screen reader) knows a button by: Discord shows some as an emoji only.
export function buttonName(button) {
  const pick = /::(?:PicReader|PromptAnalyzer)::([1-5])/.exec(button.customId);
  if (pick) return `Imagine prompt ${pick[1]}`; // its label is the bare number
  if (button.label) return button.label;
  const pan = /::pan_(left|right|up|down)::/.exec(button.customId);
  if (pan) return PAN_NAMES[pan[1]];
  if (button.customId.includes("::reroll::")) return "Reroll";
  if (button.customId.startsWith("MJ::Picread::Retry")) return "Describe again";
  return button.emoji || button.customId;
}

const ANALYSES = new Set(["DESCRIBE", "SHORTEN"]); // their result is text: prompts to press

export const isRegion = (customId) => customId.startsWith("MJ::Inpaint::");
export const isCustomZoom = (customId) => customId.startsWith("MJ::CustomZoom::");
export const isRegionResult = (task) => task.action === "INPAINT" && task.status === "SUCCESS";

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children.filter(Boolean));
  return node;
}

export class History {
  constructor(list, { onPress, onBoard, onCancel }) {
    this.list = list;
    this.onPress = onPress;
    this.onBoard = onBoard;
    this.onCancel = onCancel;
    this.tasks = new Map(); // id -> task JSON
    this.cards = new Map(); // id -> <li>
  }

  get oldest() {
    let oldest = null;
    for (const task of this.tasks.values()) {
      if (!oldest || order(task, oldest) > 0) oldest = task;
    }
    return oldest;
  }

  // Adds or updates a task; an event older than what the card shows is ignored.
  upsert(task) {
    const known = this.tasks.get(task.id);
    if (known && version(known) > version(task)) return known;
    this.tasks.set(task.id, task);
    const card = this.render(task);
    const old = this.cards.get(task.id);
    if (old) {
      old.replaceWith(card);
    } else {
      // the first card, in the page's order, that is older than this task
      const after = [...this.list.children].find((other) => order(task, this.tasks.get(other.dataset.id)) < 0);
      this.list.insertBefore(card, after || null);
    }
    this.cards.set(task.id, card);
    return task;
  }

  render(task) {
    const label = `Task ${task.id}`;
    const running = task.status === "IN_PROGRESS" || task.status === "SUBMITTED";
    const analysis = ANALYSES.has(task.action) && task.status === "SUCCESS";
    const pictured = Boolean(task.imageUrl) || !ANALYSES.has(task.action); // a shorten has no picture
    const image = task.imageUrl
      ? element("img", {
          src: task.imageUrl,
          alt: `${task.status === "SUCCESS" ? "Result" : "Preview"} of: ${task.prompt}`,
          loading: "lazy",
          decoding: "async",
        })
      : element("div", { class: "placeholder", text: running ? "…" : "" });
    const buttons = element("div", { class: "buttons", role: "group", "aria-label": `Buttons of task ${task.id}` });
    for (const button of task.buttons || []) {
      const name = buttonName(button);
      const text = `${button.emoji ? `${button.emoji} ` : ""}${name}`;
      buttons.append(
        element("button", {
          type: "button",
          "aria-label": name,
          title: name,
          text,
          onclick: () => this.onPress(task, button),
        }),
      );
    }
    if (running || task.status === "MODAL") {
      buttons.append(element("button", { type: "button", text: "Cancel task", onclick: () => this.onCancel(task) }));
    }
    if (isRegionResult(task)) {
      buttons.append(element("button", { type: "button", text: "Candidate board", onclick: () => this.onBoard(task) }));
    }
    const progress = Number.parseInt(task.progress, 10) || 0;
    return element(
      "li",
      {
        class: `task status-${task.status.toLowerCase()}${pictured ? "" : " text-only"}`,
        "data-id": task.id,
        "aria-label": label,
      },
      pictured && element("figure", {}, image),
      element(
        "div",
        { class: "meta" },
        element("p", {
          class: "prompt",
          text: task.action === "DESCRIBE" ? task.description : task.prompt || task.description,
        }),
        analysis && element("p", { class: "analysis" }, ...marked(task.properties.finalPrompt)),
        element("p", {
          class: "state",
          text: `${task.action} · ${STATUS_WORDS[task.status] || task.status}${running ? ` · ${progress}%` : ""}`,
        }),
        running && element("progress", { max: "100", value: String(progress), "aria-label": `Progress of ${label}` }),
        task.failReason && element("p", { class: "fail", text: task.failReason }),
        buttons,
      ),
    );
  }
}

// Midjourney's **bold** and ~~struck~~ words as elements (text nodes only: nothing is parsed as HTML).
function marked(text) {
  return text.split(/(\*\*[^*\n]+\*\*|~~[^~\n]+~~)/).map((part) => {
    if (part.startsWith("**") && part.endsWith("**") && part.length > 4) return element("strong", { text: part.slice(2, -2) });
    if (part.startsWith("~~") && part.endsWith("~~") && part.length > 4) return element("s", { text: part.slice(2, -2) });
    return document.createTextNode(part);
  });
}

function version(task) {
  return (task.properties && task.properties.version) || 0;
}

// Newest first: by submit time, then by id (the numeric ids grow with time).
function order(a, b) {
  return b.submitTime - a.submitTime || (BigInt(b.id) > BigInt(a.id) ? 1 : BigInt(b.id) < BigInt(a.id) ? -1 : 0);
}
