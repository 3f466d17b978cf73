/**
 * The text a tiny tokenizer learns its merges from: plain English of the kind chat datasets hold,
 * and some TypeScript and Python, so that words, spaces, punctuation and indentation all get merges.
 * Changing it changes every tiny tokenizer (and the models and fixtures built on them).
 */
export const tinyCorpus = `The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the forest.
A language model reads text as a sequence of tokens. Each token is a piece of a word, a whole word, a number or a sign.
The model learns to predict the next token from the tokens before it. When we fine-tune a model, we show it examples
of the answers we want, and it learns to give answers like them. We train only on the answer, not on the question.
What is the capital of France? The capital of France is Paris. What is the capital of Italy? The capital of Italy is Rome.
How many days are there in a week? There are seven days in a week. How many hours are there in a day? There are twenty-four.
Please write a short summary of the following text. The text describes how the system stores data and how users read it.
Thank you for your question! Here is the answer you asked for. If you have another question, please let me know.
The user asked the assistant to explain the error. The assistant explained that the file was missing and how to fix it.
I would like to book a table for two people at seven o'clock. Sure, I have booked a table for two at seven o'clock.
It's a good day to learn something new. They're going to the market, and we'll meet them there at noon.
The service returns a list of items, and each item has a name, a time when it was created and a set of labels.
In the morning the team reviews the results of the training runs, compares the loss of each model and picks the best one.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 16 32 64 100 128 256 512 1024 2048 4096 2024 2025 3.14 0.5 1e-4 42.

export function add(a: number, b: number): number {
  return a + b;
}

export async function loadConfig(file: string): Promise<Config> {
  const text = await readFile(file, "utf8");
  const value = JSON.parse(text) as Config;
  if (value.name === undefined) {
    throw new Error(\`\${file}: the config has no name\`);
  }
  return value;
}

for (let i = 0; i < items.length; i++) {
  const item = items[i];
  if (item === undefined) continue;
  console.log(item.name, item.value);
}

def train(model, data, epochs=3, learning_rate=1e-4):
    """Train the model on the data and return the final loss."""
    optimizer = AdamW(model.parameters(), lr=learning_rate)
    for epoch in range(epochs):
        for batch in data:
            loss = model(batch["input_ids"], labels=batch["labels"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return loss.item()

if __name__ == "__main__":
    print("hello, world")

{"messages": [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello! How can I help you today?"}]}
{"instruction": "Translate to French: good morning", "output": "bonjour"}
{"prompt": "The sky is", "completion": " blue."}
`;
