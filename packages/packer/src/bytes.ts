/**
 * A pull-based byte reader over an async stream of Buffers: exact reads for headers,
 * streamed pieces for member data, never the whole stream in memory.
 */
import { corrupt } from './newc.js';

const EMPTY = Buffer.alloc(0);

export class ByteReader {
  private chunk: Buffer = EMPTY;
  private pos = 0;
  /** Bytes consumed so far. */
  position = 0;
  private ended = false;

  constructor(
    private readonly source: AsyncIterator<Buffer>,
    private readonly what: string,
  ) {}

  private get available(): number {
    return this.chunk.length - this.pos;
  }

  /** Load the next non-empty chunk; false at end of stream. */
  private async next(): Promise<boolean> {
    if (this.ended) return false;
    for (;;) {
      const r = await this.source.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      if (r.value.length > 0) {
        this.chunk = r.value;
        this.pos = 0;
        return true;
      }
    }
  }

  truncated(detail: string): Error {
    return corrupt(`${this.what} is truncated: ${detail} at byte ${this.position}`);
  }

  /** Exactly n bytes (a view when they lie in one chunk, else a copy). */
  async read(n: number, detail: string): Promise<Buffer> {
    if (this.available >= n) {
      const out = this.chunk.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.position += n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let have = 0;
    while (have < n) {
      if (this.available === 0 && !(await this.next())) throw this.truncated(detail);
      const take = Math.min(n - have, this.available);
      this.chunk.copy(out, have, this.pos, this.pos + take);
      this.pos += take;
      this.position += take;
      have += take;
    }
    return out;
  }

  /** Up to n bytes, as they come; throws if the stream ends first. */
  async *take(n: number, detail: string): AsyncGenerator<Buffer, void, undefined> {
    let left = n;
    while (left > 0) {
      if (this.available === 0 && !(await this.next())) throw this.truncated(detail);
      const size = Math.min(left, this.available);
      const out = this.chunk.subarray(this.pos, this.pos + size);
      this.pos += size;
      this.position += size;
      left -= size;
      yield out;
    }
  }

  async skip(n: number, detail: string): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.available === 0 && !(await this.next())) throw this.truncated(detail);
      const size = Math.min(left, this.available);
      this.pos += size;
      this.position += size;
      left -= size;
    }
  }

  /** Skip NUL padding; false when the stream ends. */
  async skipNul(): Promise<boolean> {
    for (;;) {
      if (this.available === 0 && !(await this.next())) return false;
      const c = this.chunk;
      let p = this.pos;
      while (p < c.length && c[p] === 0) p++;
      this.position += p - this.pos;
      this.pos = p;
      if (p < c.length) return true;
    }
  }

  /** Look at up to n upcoming bytes without consuming them (shorter at end of stream). */
  async peek(n: number): Promise<Buffer> {
    while (this.available < n) {
      const rest = this.chunk.subarray(this.pos);
      if (!(await this.next())) {
        this.chunk = rest;
        this.pos = 0;
        break;
      }
      this.chunk = Buffer.concat([rest, this.chunk]);
      this.pos = 0;
    }
    return this.chunk.subarray(this.pos, this.pos + n);
  }

  /** Drain the source (so a decompressor's exit status is checked). */
  async finish(): Promise<void> {
    while (await this.next()) {
      this.position += this.chunk.length;
      this.pos = this.chunk.length;
    }
  }
}
