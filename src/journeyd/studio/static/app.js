// The studio's page: imagine, history with live progress, buttons, the Vary (Region) editor and the
// candidate board, all through journeyd's public /mj API.

import * as api from "./api.js";
import { CandidateBoard } from "./board.js";
import { RegionEditor } from "./editor.js";
import { buttonName, History, isCustomZoom, isRegion, isRegionResult } from "./history.js";

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const POLL_MS = 2000; // while the live stream is down, unfinished tasks are polled instead
const UNFINISHED = new Set(["SUBMITTED", "IN_PROGRESS"]);

const history = new History($("history"), { onPress: press, onBoard: openBoard, onCancel: cancelTask });
const editor = new RegionEditor();
const board = new CandidateBoard({ onUpscale: (task, index) => pressIndex(task, `U${index}`) });
const awaitingBoard = new Set(); // region tasks submitted here: their board opens when they finish
let stream = null;
let live = false;
let wentLive = null; // resolves when the stream first opens

function notify(message, isError = false) {
  const notice = $("notice");
  notice.textContent = message;
  notice.classList.toggle("error", isError);
}

async function guarded(work) {
  try {
    return await work();
  } catch (error) {
    notify(error.message, true);
    if (error.status === 401 || error.status === 403) $("key-input").focus();
    return null;
  }
}

async function showAccount() {
  try {
    const answer = await api.account();
    $("key-form").hidden = !answer.keysRequired && !api.savedKey();
    $("credits").value = answer.key ? `${answer.key.name || answer.key.prefix}: ${answer.key.balance} credits` : "";
    return true;
  } catch (error) {
    $("key-form").hidden = false;
    $("credits").value = "";
    notify(error.status === 401 ? "Paste your API key to start." : error.message, error.status !== 401);
    return false;
  }
}

async function loadPage(before) {
  const tasks = await api.listTasks({ before, limit: PAGE });
  for (const task of tasks) history.upsert(task);
  $("older").hidden = tasks.length < PAGE;
}

// A submit answered with a task id: show the task at once, before any event about it arrives.
async function track(answer) {
  const ids = String(answer.result).split(","); // "Imagine all" answers its four tasks' ids
  const tasks = await Promise.all(ids.map((id) => api.fetchTask(id)));
  for (const task of tasks) history.upsert(task);
  showAccount();
  return tasks[0];
}

function onTask(task) {
  const shown = history.upsert(task);
  if (awaitingBoard.has(task.id) && isRegionResult(shown)) {
    awaitingBoard.delete(task.id);
    openBoard(shown);
  }
  if (task.status === "FAILURE" || task.status === "SUCCESS") showAccount();
}

async function press(task, button) {
  const speed = $("speed").value;
  if (isRegion(button.customId)) return varyRegion(task, button, speed);
  if (isCustomZoom(button.customId)) return customZoom(task, button, speed);
  await guarded(async () => {
    let answer = await api.press(task.id, button.customId, speed);
    // a prompt picked after a describe or a shorten waits for its modal: an empty one keeps that prompt
    if (answer.code === 21) answer = await api.modal(answer.result, "", "");
    await track(answer);
    notify(`${buttonName(button)} pressed.`);
  });
}

async function cancelTask(task) {
  await guarded(async () => {
    const answer = await api.cancel(task.id);
    if (answer.code !== 1) throw new api.ApiError(answer.description, 400);
    history.upsert(await api.fetchTask(task.id));
    notify(`${answer.description}: task ${task.id}.`);
  });
}

function pressIndex(task, label) {
  const button = (task.buttons || []).find((b) => b.label === label);
  if (button) {
    board.close();
    return press(task, button);
  }
  notify(`Task ${task.id} has no ${label} button.`, true);
}

async function varyRegion(task, button, speed) {
  const choice = await editor.open(task.imageUrl, task.prompt);
  if (!choice) return;
  await guarded(async () => {
    const waiting = await api.press(task.id, button.customId, speed);
    const answer = await api.modal(waiting.result, choice.prompt, choice.mask);
    awaitingBoard.add(answer.result);
    const shown = await track(answer);
    notify("Vary (Region) submitted.");
    onTask(shown);
  });
}

async function customZoom(task, button, speed) {
  const dialog = $("zoom-dialog");
  $("zoom-prompt").value = task.prompt.replace(/\s--zoom\s+\S+/g, "");
  dialog.returnValue = "";
  dialog.showModal();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (dialog.returnValue !== "submit") return;
  const factor = Number($("zoom-factor").value);
  if (!(factor >= 1 && factor <= 2)) return notify("The zoom factor is a number from 1 to 2.", true);
  await guarded(async () => {
    const waiting = await api.press(task.id, button.customId, speed);
    await track(await api.modal(waiting.result, `${$("zoom-prompt").value.trim()} --zoom ${factor}`, ""));
    notify(`Custom Zoom ${factor}x submitted.`);
  });
}

async function openBoard(task) {
  const parent =
    history.tasks.get(task.parentId) || (await guarded(() => api.fetchTask(task.parentId)));
  await board.open(task, parent);
}

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// Describe and Blend take images from the person's disk: the input is cleared so the same file can go again.
async function fromFiles(input, count, submitWith) {
  const files = [...input.files];
  input.value = "";
  if (!files.length) return;
  const [fewest, most] = count;
  if (files.length < fewest || files.length > most) {
    return notify(fewest === most ? "Choose one image." : `Choose ${fewest} to ${most} images.`, true);
  }
  await guarded(async () => {
    await track(await submitWith(await Promise.all(files.map(dataUrl))));
  });
}

function startStream() {
  if (stream) stream.stop();
  let opened;
  wentLive = new Promise((resolve) => {
    opened = resolve;
  });
  stream = api.streamTasks(onTask, (state, why = "") => {
    live = state === "live";
    if (live) opened();
    $("connection").value = live ? "● live" : state;
    $("connection").title = why; // the reason, for whoever hovers to ask
  });
}

async function pollUnfinished() {
  const ids = [...history.tasks.values()].filter((task) => UNFINISHED.has(task.status)).map((task) => task.id);
  if (!live && ids.length) {
    const tasks = await api.fetchTasks(ids.slice(0, PAGE)).catch(() => []);
    for (const task of tasks) onTask(task);
  }
  setTimeout(pollUnfinished, POLL_MS);
}

async function start() {
  $("imagine-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) return notify("Write a prompt first.", true);
    await guarded(async () => {
      await track(await api.imagine(prompt, $("speed").value));
      notify("Imagine submitted.");
    });
  });
  $("shorten").addEventListener("click", async () => {
    const prompt = $("prompt").value.trim();
    if (!prompt) return notify("Write the prompt to shorten first.", true);
    await guarded(async () => {
      await track(await api.shorten(prompt, $("speed").value));
      notify("Shorten submitted.");
    });
  });
  $("describe-file").addEventListener("change", (event) =>
    fromFiles(event.target, [1, 1], ([image]) => api.describe(image, $("speed").value)),
  );
  $("blend-files").addEventListener("change", (event) =>
    fromFiles(event.target, [2, 5], (images) => api.blend(images, $("blend-shape").value, $("speed").value)),
  );
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("imagine-form").requestSubmit();
    }
  });
  $("older").addEventListener("click", () => guarded(() => loadPage(history.oldest && history.oldest.id)));
  $("key-input").value = api.savedKey();
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    api.saveKey($("key-input").value.trim());
    notify("");
    if (await showAccount()) await begin();
  });
  $("key-forget").addEventListener("click", () => {
    api.saveKey("");
    $("key-input").value = "";
    location.reload();
  });
  if (await showAccount()) await begin();
}

async function begin() {
  // The stream first: it has no backlog, so a change made while the list loads comes as an event
  // (an older copy in the list is then ignored). If it cannot open, polling covers for it.
  startStream();
  await Promise.race([wentLive, new Promise((resolve) => setTimeout(resolve, POLL_MS))]);
  await guarded(() => loadPage());
  setTimeout(pollUnfinished, POLL_MS);
  document.body.dataset.ready = "true"; // for people's tools and the browser tests alike
  performance.mark("studio-ready"); // bench/studio.py reads it
}

start();
