export { ModelFormatError } from "./errors.js";
export { chatmlTemplate, llama3Template } from "./chat-templates.js";
export { loadTokenizer } from "./tokenizer.js";
export type { ChatRole, ChatTurn, ModelTokenizer } from "./tokenizer.js";
export { writeTinyTokenizer } from "./tiny-tokenizer.js";
export type { TinyTokenizerOptions } from "./tiny-tokenizer.js";
