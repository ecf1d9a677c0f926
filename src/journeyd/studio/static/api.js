// journeyd's own public APIs, as the studio calls them: the /mj dialect for tasks, /v1/account for
// credits. Nothing here knows about the page.

const KEY_STORAGE = "journeyd.key";
const SPEED_PREFIX = { relax: "/mj-relax/mj", fast: "/mj-fast/mj", turbo: "/mj-turbo/mj" };

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function savedKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function saveKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = savedKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

// The message a person can act on, from any of the dialects' error envelopes.
function messageOf(body, status) {
  if (body && typeof body === "object") {
    if (body.error && body.error.message) return body.error.message;
    if (body.description) return body.description;
    if (body.message) return body.message;
  }
  return `the server answered ${status}`;
}

async function call(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(`cannot reach journeyd (${error.message})`, 0);
  }
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(messageOf(answer, response.status), response.status);
  return answer;
}

// /mj answers 200 with a code: 1 submitted, 21 waiting for a modal, 22 queued; anything else is a refusal.
async function submit(path, body) {
  const answer = await call(path, { method: "POST", body });
  if (![1, 21, 22].includes(answer.code)) throw new ApiError(answer.description, 400);
  return answer;
}

export const account = () => call("/v1/account");
export const fetchTask = (id) => call(`/mj/task/${encodeURIComponent(id)}/fetch`);
export const fetchTasks = (ids) => call("/mj/task/list-by-condition", { method: "POST", body: { ids } });

export function listTasks({ before, limit = 50 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before) query.set("before", before);
  return call(`/mj/task/list?${query}`);
}

export const imagine = (prompt, speed) => submit(`${SPEED_PREFIX[speed]}/submit/imagine`, { prompt });
export const describe = (base64, speed) => submit(`${SPEED_PREFIX[speed]}/submit/describe`, { base64 });
export const blend = (base64Array, dimensions, speed) =>
  submit(`${SPEED_PREFIX[speed]}/submit/blend`, { base64Array, dimensions });
export const shorten = (prompt, speed) => submit(`${SPEED_PREFIX[speed]}/submit/shorten`, { prompt });
export const press = (taskId, customId, speed) =>
  submit(`${SPEED_PREFIX[speed]}/submit/action`, { taskId, customId });
export const cancel = (id) => call(`/mj/task/${encodeURIComponent(id)}/cancel`, { method: "POST" });
export const modal = (taskId, prompt, maskBase64) => submit("/mj/submit/modal", { taskId, prompt, maskBase64 });

// Parses a text/event-stream incrementally; returns the events complete so far and keeps the rest.
export class EventParser {
  constructor() {
    this.buffer = "";
  }

  push(text) {
    this.buffer += text.replace(/\r\n?/g, "\n");
    const events = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const event = { id: null, type: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") event.id = value;
        else if (field === "event") event.type = value;
        else if (field === "data") event.data.push(value);
      }
      if (event.data.length) events.push({ ...event, data: event.data.join("\n") });
    }
    return events;
  }
}

// One stream of the caller's task updates for the whole page. fetch() rather than EventSource, so
// the key travels in a header and never in a URL; a reconnect resumes from the last event id.
export function streamTasks(onTask, onState) {
  let lastId = null;
  let stopped = false;
  let controller = null;

  async function run() {
    let delay = 500;
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch("/mj/task/events", {
          headers: headers(lastId ? { "Last-Event-ID": lastId } : {}),
          signal: controller.signal,
        });
        if (!response.ok) throw new ApiError(messageOf(await response.json().catch(() => null), response.status));
        onState("live");
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = new EventParser();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.push(value)) {
            if (event.id) lastId = event.id;
            if (event.type === "task") onTask(JSON.parse(event.data));
          }
        }
      } catch (error) {
        if (stopped) return;
        onState("reconnecting…", error.message || String(error));
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
