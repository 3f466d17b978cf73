/**
 * Chat templates as Hugging Face ships them in tokenizer_config.json, kept verbatim so that a
 * tokenizer we write renders exactly like the model it imitates.
 */

/** ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), as in OpenHermes and Qwen without a default system prompt. */
export const chatmlTemplate =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Meta-Llama-3-8B-Instruct: `<|begin_of_text|>` once, then `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` per turn. */
export const llama3Template =
  "{% set loop_messages = messages %}{% for message in loop_messages %}" +
  "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}" +
  "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
