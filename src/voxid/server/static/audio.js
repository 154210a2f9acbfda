// Microphone capture at 16 kHz mono 16-bit, and WAV encoding: no library, no build step.

export const TARGET_RATE = 16000;

/** A user-facing failure with a message that says what to do. */
export class UserError extends Error {}

/**
 * Streaming resampler: a windowed-sinc low-pass (so nothing above the new Nyquist
 * folds back into the speech band) followed by linear interpolation at the new rate.
 */
export class Resampler {
  constructor(inRate, outRate = TARGET_RATE, taps = 63) {
    this.ratio = inRate / outRate;
    const fc = 0.45 * Math.min(1, 1 / this.ratio); // cut-off in cycles per input sample
    const h = new Float32Array(taps);
    const mid = (taps - 1) / 2;
    let sum = 0;
    for (let n = 0; n < taps; n++) {
      const x = n - mid;
      const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
      const hamming = 0.54 - 0.46 * Math.cos((2 * Math.PI * n) / (taps - 1));
      h[n] = sinc * hamming;
      sum += h[n];
    }
    for (let n = 0; n < taps; n++) h[n] /= sum;
    this.h = h;
    this.hist = new Float32Array(taps - 1);
    this.prev = 0;
    this.t = 1; // position of the next output sample; index 0 is the previous block's last
  }

  /** Float32Array at the input rate -> Float32Array at the output rate. */
  process(input) {
    const n = input.length;
    const taps = this.h.length;
    const buf = new Float32Array(this.hist.length + n);
    buf.set(this.hist);
    buf.set(input, this.hist.length);
    const f = new Float32Array(n + 1);
    f[0] = this.prev;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < taps; k++) s += this.h[k] * buf[i + k];
      f[i + 1] = s;
    }
    this.hist = buf.slice(n);
    this.prev = f[n];
    const out = [];
    while (this.t <= n) {
      const i = Math.floor(this.t);
      const a = this.t - i;
      out.push(i < n ? f[i] * (1 - a) + f[i + 1] * a : f[n]);
      this.t += this.ratio;
    }
    this.t -= n;
    return Float32Array.from(out);
  }
}

/** Float samples in [-1, 1] -> 16-bit PCM, clipped. */
export function toInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

/** Concatenated 16-bit chunks -> a mono 16-bit PCM WAV Blob. */
export function encodeWav(chunks, rate = TARGET_RATE) {
  const n = chunks.reduce((sum, c) => sum + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (off, s) => [...s].forEach((ch, i) => view.setUint8(off + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * n, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, 2 * n, true);
  let off = 44;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++, off += 2) view.setInt16(off, c[i], true);
  }
  return new Blob([view], { type: "audio/wav" });
}

function microphoneError(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return new UserError(
      "Microphone access was denied. Allow the microphone for this site in the browser's " +
        "settings and try again, or upload a file instead.");
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return new UserError("No microphone was found. Connect one, or upload a file instead.");
  }
  if (name === "NotReadableError") {
    return new UserError("The microphone is busy in another application.");
  }
  return new UserError(`The microphone could not be started (${name || err}).`);
}

/**
 * The microphone as a stream of 16 kHz Int16Array blocks: `onPcm(int16, level)` is
 * called for every block, `level` being its RMS (0-1) for a meter.
 */
export class Microphone {
  async start(onPcm) {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new UserError(
        "Recording needs a secure page (https, or http://localhost). Upload a file instead.");
    }
    try {
      // Raw audio: echo cancellation and noise suppression change the voice itself.
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
                 autoGainControl: false },
      });
    } catch (err) {
      throw microphoneError(err);
    }
    this.ctx = new AudioContext();
    await this.ctx.resume();
    const source = this.ctx.createMediaStreamSource(this.stream);
    const resampler = new Resampler(this.ctx.sampleRate);
    this.active = true;
    const handle = (block) => {
      // A block still queued in the port when Stop is pressed must not reach the caller:
      // it would land after the recording was finished (and overwrite its label).
      if (!this.active) return;
      let sum = 0;
      for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
      onPcm(toInt16(resampler.process(block)), Math.sqrt(sum / Math.max(1, block.length)));
    };
    // A silent sink keeps the capture node in the rendered graph without playing anything.
    this.sink = this.ctx.createGain();
    this.sink.gain.value = 0;
    this.sink.connect(this.ctx.destination);
    if (this.ctx.audioWorklet) {
      await this.ctx.audioWorklet.addModule("/static/capture-worklet.js");
      this.node = new AudioWorkletNode(this.ctx, "voxid-capture");
      this.node.port.onmessage = (e) => handle(e.data);
    } else {
      this.node = this.ctx.createScriptProcessor(4096, 1, 1);
      this.node.onaudioprocess = (e) => handle(e.inputBuffer.getChannelData(0).slice(0));
    }
    source.connect(this.node);
    this.node.connect(this.sink);
  }

  async stop() {
    this.active = false;
    if (this.node?.port) this.node.port.onmessage = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.node) this.node.disconnect();
    if (this.ctx && this.ctx.state !== "closed") await this.ctx.close();
    this.stream = this.ctx = this.node = null;
  }
}
