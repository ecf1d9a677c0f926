// The candidate board for a Vary (Region) result: the four candidates side by side with the mask's
// outline, 1-4 to pick one, a slider and a flicker against the parent, and the server's own count of
// pixels changed beyond the feather.

import { loadImage } from "./editor.js";

const $ = (id) => document.getElementById(id);
const OUTLINE = [255, 214, 0, 255];
const FLICKER_MS = 600;

// The mask's edge at the thumbnail's size, as an RGBA overlay canvas.
async function outline(maskUrl, width, height) {
  const mask = await loadImage(maskUrl);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.className = "outline";
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(mask, 0, 0, width, height);
  const source = ctx.getImageData(0, 0, width, height).data;
  const on = (x, y) => x >= 0 && y >= 0 && x < width && y < height && source[4 * (y * width + x)] >= 128;
  const image = ctx.createImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (on(x, y) && !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1))) {
        image.data.set(OUTLINE, 4 * (y * width + x));
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

export function fidelityText(counts) {
  if (!Array.isArray(counts) || !counts.length) return { text: "Beyond the feather: not measured", ok: false };
  const changed = counts.reduce((sum, n) => sum + n, 0);
  const text = `Beyond the feather: ${changed.toLocaleString("en")} px differ from the parent`;
  return { text, ok: changed === 0 };
}

export class CandidateBoard {
  constructor({ onUpscale }) {
    this.dialog = $("board");
    this.onUpscale = onUpscale;
    this.flickering = null;
    $("board-close").addEventListener("click", () => this.close());
    $("compare-slider").addEventListener("input", () => this.compare());
    $("flicker").addEventListener("click", () => this.flicker(!this.flickering));
    $("board-upscale").addEventListener("click", () => this.onUpscale(this.task, this.chosen + 1));
    this.dialog.addEventListener("keydown", (event) => {
      if (["1", "2", "3", "4"].includes(event.key) && !event.ctrlKey && !event.metaKey) this.choose(Number(event.key) - 1);
    });
    this.dialog.addEventListener("close", () => this.flicker(false));
  }

  async open(task, parent) {
    this.task = task;
    const urls = task.imageUrls.map((image) => image.url);
    const holder = $("candidates");
    holder.replaceChildren();
    const badge = fidelityText(task.properties && task.properties.changedBeyondFeather);
    $("fidelity").value = badge.text;
    $("fidelity").classList.toggle("ok", badge.ok);
    $("fidelity").classList.toggle("bad", !badge.ok);
    $("compare-parent").src = parent ? parent.imageUrl : "";
    this.buttons = urls.map((url, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "candidate";
      button.setAttribute("aria-label", `Candidate ${index + 1}`);
      button.setAttribute("aria-pressed", "false");
      const image = document.createElement("img");
      image.src = url;
      image.alt = `Candidate ${index + 1} of: ${task.prompt}`;
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = String(index + 1);
      button.append(image, key);
      button.addEventListener("click", () => this.choose(index));
      holder.append(button);
      return button;
    });
    this.choose(0);
    if (!this.dialog.open) this.dialog.showModal();
    const maskUrl = task.properties && task.properties.maskUrl;
    if (maskUrl && task.width && task.height) {
      const scale = Math.min(1, 320 / task.width);
      const width = Math.round(task.width * scale);
      const height = Math.round(task.height * scale);
      const edge = await outline(maskUrl, width, height).catch(() => null);
      if (edge && this.task === task) {
        for (const button of this.buttons) button.append(edge.cloneNode(false));
        for (const canvas of holder.querySelectorAll("canvas.outline")) canvas.getContext("2d").drawImage(edge, 0, 0);
      }
    }
  }

  choose(index) {
    if (!this.buttons || !this.buttons[index]) return;
    this.chosen = index;
    this.buttons.forEach((button, i) => button.setAttribute("aria-pressed", String(i === index)));
    $("compare-candidate").src = this.task.imageUrls[index].url;
    $("board-upscale").textContent = `Upscale candidate ${index + 1}`;
    this.compare();
  }

  // The candidate covers the parent up to the slider: 100 shows only the candidate.
  compare() {
    const shown = Number($("compare-slider").value);
    $("compare-candidate").style.clipPath = `inset(0 ${100 - shown}% 0 0)`;
  }

  flicker(on) {
    clearInterval(this.flickering);
    this.flickering = null;
    $("flicker").setAttribute("aria-pressed", String(Boolean(on)));
    $("compare-candidate").style.visibility = "visible";
    if (on) {
      this.flickering = setInterval(() => {
        const style = $("compare-candidate").style;
        style.visibility = style.visibility === "hidden" ? "visible" : "hidden";
      }, FLICKER_MS);
    }
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }
}
