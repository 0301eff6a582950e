// The live stream: Server-Sent Events read with fetch (EventSource cannot send the token as a
// header, and a token in the URL would end up in logs). After a dropped connection it resumes
// with Last-Event-ID from the last event it saw; when the API no longer has the missed events
// it says `reset`, and the page reloads its state and resumes from there.

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

export class Stream {
  // onEvent(kind, data, id) for every event; onReset() when the state must be reloaded;
  // onStatus("live" | "reconnecting") as the connection comes and goes.
  constructor({ headers, onEvent, onReset, onStatus }) {
    Object.assign(this, { headers, onEvent, onReset, onStatus });
    this.lastId = null;
    this.connections = 0; // connections opened: more than one means it resumed
    this.received = 0;
    this.stopped = true;
  }

  start(lastId) {
    this.lastId = lastId;
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  async run() {
    let delay = 250;
    while (!this.stopped) {
      try {
        await this.connect();
        delay = 250;
      } catch (error) {
        if (this.stopped) return;
        if (error.status === 401 || error.status === 403) {
          // The token was revoked (or never could read the stream): retrying cannot help.
          this.stopped = true;
          this.onStatus("offline");
          return;
        }
      }
      if (this.stopped) return;
      this.onStatus("reconnecting");
      await sleep(delay);
      delay = Math.min(delay * 2, 4000);
    }
  }

  async connect() {
    this.controller = new AbortController();
    const extra = this.lastId === null ? {} : { "Last-Event-ID": String(this.lastId) };
    const response = await fetch("/stream", {
      headers: this.headers({ Accept: "text/event-stream", ...extra }),
      signal: this.controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw Object.assign(new Error(`stream answered ${response.status}`), { status: response.status });
    this.connections += 1;
    this.onStatus("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (this.frame(frame) === "stop") return;
      }
    }
  }

  // One SSE frame; "stop" ends this connection (a reset or an overflow).
  frame(text) {
    let kind = "message";
    let id = null;
    let data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("event: ")) kind = line.slice(7);
      else if (line.startsWith("id: ")) id = Number(line.slice(4));
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data) return null; // a comment (heartbeat)
    if (kind === "reset") {
      this.stop();
      this.onReset();
      return "stop";
    }
    if (kind === "overflow") return "stop"; // fell behind: resume after the last event seen
    if (id !== null) this.lastId = id;
    this.received += 1;
    this.onEvent(kind, JSON.parse(data), id);
    return null;
  }
}
