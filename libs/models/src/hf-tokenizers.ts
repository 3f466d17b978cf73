import { Tokenizer } from "@huggingface/tokenizers";

/**
 * The part of @huggingface/tokenizers that Lathe uses. Its typings import their own files without
 * extensions, which NodeNext resolution cannot follow, so TypeScript sees `any`; this file states
 * what we rely on in one place.
 */
export interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], options: { clean_up_tokenization_spaces: boolean }): string;
}

export const HfTokenizer = Tokenizer as new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;
