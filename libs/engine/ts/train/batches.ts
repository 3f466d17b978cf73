/**
 * Training data to engine batches: JSONL lines tokenized with the model's tokenizer and chat
 * template, packed (or not) into units, shuffled per epoch with a seeded generator, and units
 * padded into micro-batches.
 */
import { readFile } from "node:fs/promises";
import {
  IGNORE_INDEX,
  loadTokenizer,
  packExamples,
  padExamples,
  shiftLabels,
  tokenizeExample,
  type LabeledSequence,
  type ModelTokenizer,
  type PackedRow,
  type SequenceSet,
  type TrainingExample,
} from "@lathe/models";
import { mulberry32 } from "@lathe/text";
import { TrainingDataError } from "../errors.js";
import type { Batch } from "../model.js";

interface ExampleSet {
  examples: LabeledSequence[];
  truncated: number;
}

/**
 * The sequences `train` is given, checked: at least one, none empty or longer than
 * max_seq_length, labels as long as ids, every id in the vocabulary and every label an id or -100.
 * @throws RangeError naming the set and the sequence.
 */
export function checkSequences(what: string, set: SequenceSet, maxSeqLength: number, vocabSize: number): ExampleSet {
  if (set.sequences.length === 0) throw new RangeError(`${what}: no sequences to train on`);
  if (!Number.isSafeInteger(set.truncated) || set.truncated < 0 || set.truncated > set.sequences.length) throw new RangeError(`${what}: truncated ${set.truncated} is not a count of at most ${set.sequences.length}`);
  for (const [i, s] of set.sequences.entries()) {
    if (s.ids.length === 0) throw new RangeError(`${what} sequence ${i} is empty`);
    if (s.ids.length > maxSeqLength) throw new RangeError(`${what} sequence ${i} has ${s.ids.length} tokens, more than max_seq_length ${maxSeqLength} (it was made with other settings)`);
    if (s.labels.length !== s.ids.length) throw new RangeError(`${what} sequence ${i} has ${s.ids.length} ids and ${s.labels.length} labels`);
    for (let j = 0; j < s.ids.length; j++) {
      const id = s.ids[j]!;
      const label = s.labels[j]!;
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new RangeError(`${what} sequence ${i} has id ${id} at ${j}, outside the vocabulary of ${vocabSize}`);
      if (label !== IGNORE_INDEX && label !== id) throw new RangeError(`${what} sequence ${i} has label ${label} at ${j}; a label is the id there or ${IGNORE_INDEX}`);
    }
  }
  return { examples: set.sequences, truncated: set.truncated };
}

/**
 * Reads and tokenizes a JSONL file of training rows with the model's tokenizer and chat
 * template, as `lathe train` and `evalLoss` give data; blank lines are skipped.
 * @throws TrainingDataError naming file:line.
 */
export async function readExamples(file: string, tok: ModelTokenizer, o: { maxSeqLength: number; trainOnInputs: boolean }): Promise<ExampleSet> {
  const text = await readFile(file, "utf8");
  const examples: LabeledSequence[] = [];
  let truncated = 0;
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (line === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new TrainingDataError(file, index + 1, `not valid JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    let ex;
    try {
      ex = tokenizeExample(tok, value as TrainingExample, o);
    } catch (err) {
      throw new TrainingDataError(file, index + 1, err instanceof Error ? err.message : String(err), { cause: err });
    }
    if (ex.truncated) truncated++;
    examples.push({ ids: ex.ids, labels: ex.labels });
  });
  if (examples.length === 0) throw new TrainingDataError(file, 1, "no examples (the file is empty)");
  return { examples, truncated };
}

/** An id to put under padding (never trained, never attended to by real tokens): the eos token's, else 0. */
export function padTokenId(tok: ModelTokenizer): number {
  const ids = tok.eosToken === undefined ? [] : tok.encode(tok.eosToken);
  return ids.length === 1 ? (ids[0] ?? 0) : 0;
}

/** A packed row carried as a LabeledSequence through shuffling; `asRow` restores it. */
interface RowUnit extends LabeledSequence {
  row: PackedRow;
}

/** A packed row without its trailing padding (the batch re-pads to its longest row). */
function trimmedRow(row: PackedRow): RowUnit {
  let end = row.segments.length;
  while (end > 0 && row.segments[end - 1] === -1) end--;
  const cut: PackedRow = { tokens: row.tokens.slice(0, end), labels: row.labels.slice(0, end), positions: row.positions.slice(0, end), segments: row.segments.slice(0, end) };
  return { ids: cut.tokens, labels: cut.labels, row: cut };
}

function asRow(unit: LabeledSequence): PackedRow {
  return (unit as RowUnit).row;
}

/** Rows → an engine batch: padded to the longest row, labels shifted. */
export function toBatch(rows: readonly PackedRow[]): Batch {
  const seq = rows.reduce((n, r) => Math.max(n, r.tokens.length), 0);
  const batch = rows.length;
  const tokens = new Int32Array(batch * seq);
  const labels = new Int32Array(batch * seq).fill(IGNORE_INDEX);
  const positions = new Int32Array(batch * seq);
  const segments = new Int32Array(batch * seq).fill(-1);
  rows.forEach((row, b) => {
    const shifted = shiftLabels(row);
    const o = b * seq;
    tokens.set(row.tokens, o);
    labels.set(shifted, o);
    positions.set(row.positions, o);
    segments.set(row.segments, o);
    // Padding added here repeats the row's pad token (its first padding position, else the last token).
    const pad = row.tokens[row.segments.indexOf(-1)] ?? row.tokens.at(-1) ?? 0;
    tokens.fill(pad, o + row.tokens.length, o + seq);
  });
  return { tokens, labels, positions, segments, batch, seq };
}

export function labelCount(batch: Batch): number {
  let n = 0;
  for (const l of batch.labels) if (l !== IGNORE_INDEX) n++;
  return n;
}

export function realTokens(batch: Batch): number {
  let n = 0;
  for (const s of batch.segments ?? []) if (s >= 0) n++;
  return n;
}

/** The seed of epoch `epoch`'s data order (0-based). */
export function epochSeed(seed: number, epoch: number): number {
  return (seed + epoch * 0x9e3779b9) >>> 0;
}

/**
 * Fisher–Yates permutation of 0..n-1 driven by mulberry32(seed): the same order for the same seed.
 * (@lathe/text's mulberry32 gives the same numbers as the copy this file once had, for every seed.)
 */
export function shuffled(n: number, seed: number): number[] {
  const next = mulberry32(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

/** What `train` shuffles and batches: with packing the packed rows (their trailing padding cut), else the examples. */
export function trainingUnits(examples: LabeledSequence[], o: { packing: boolean; maxSeqLength: number }, padId: number): LabeledSequence[] {
  return o.packing ? packExamples(examples, o.maxSeqLength, padId).map((r) => trimmedRow(r)) : examples;
}

/** The micro-batches of optimizer step `s` of an epoch whose units come in `order`: up to gradAccum chunks of batchSize units. */
export function stepBatches(
  units: readonly LabeledSequence[],
  order: readonly number[],
  s: number,
  o: { gradAccum: number; batchSize: number; packing: boolean },
  padId: number,
): Batch[] {
  const micro: Batch[] = [];
  for (let m = 0; m < o.gradAccum; m++) {
    const first = (s * o.gradAccum + m) * o.batchSize;
    if (first >= units.length) break;
    const members = order.slice(first, first + o.batchSize).map((i) => units[i] as LabeledSequence);
    micro.push(toBatch(o.packing ? members.map(asRow) : padExamples(members, padId)));
  }
  return micro;
}

/** The sequences `train` takes, from a JSONL file of rows (`lathe train --data`). */
export async function sequencesFromFile(modelDir: string, file: string, o: { maxSeqLength: number; trainOnInputs: boolean }): Promise<SequenceSet> {
  const set = await readExamples(file, await loadTokenizer(modelDir), o);
  return { sequences: set.examples, truncated: set.truncated };
}
