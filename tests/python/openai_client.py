"""Drives Lore's HTTP API with OpenAI's official Python client and prints what it saw as
JSON (the Rust test asserts on it). Arguments: base URL, the main key, a key limited to the
bot, a key for the flood, a key for plain completions, the bot, the generator's model name,
the embedder's, a question.
"""
import json
import sys

import openai

base, key, limited_key, flood_key, engine_key, bot, generator, embedder, question = sys.argv[1:]


def client(api_key):
    return openai.OpenAI(base_url=base + "/v1", api_key=api_key, max_retries=0, timeout=300)


def error_of(call):
    """The HTTP status, code and Retry-After of a call that must fail."""
    try:
        call()
    except openai.APIStatusError as e:
        return {"status": e.status_code, "code": e.code, "retry_after": e.response.headers.get("retry-after")}
    return None


ask = [{"role": "user", "content": question}]
main = client(key)
seen = {"models": sorted(m.id for m in main.models.list())}

whole = main.chat.completions.create(model=bot, messages=ask)
seen["whole"] = {
    "content": whole.choices[0].message.content,
    "finish_reason": whole.choices[0].finish_reason,
    "sources": (whole.model_extra or {}).get("sources"),
}

chunks = list(main.chat.completions.create(model=bot, messages=ask, stream=True))
seen["streamed"] = {
    "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "chunks": len(chunks),
    "finish_reason": chunks[-1].choices[0].finish_reason,
    "sources": (chunks[-1].model_extra or {}).get("sources"),
}

plain = main.chat.completions.create(
    model=generator, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
)
seen["generator"] = {"content": plain.choices[0].message.content, "model": plain.model}

# The generator as an engine for base-model prompts (what another Lore sends).
engine = client(engine_key)
prompt = "Question: What do bees make?\nAnswer:"
text = engine.completions.create(model=generator, prompt=prompt, max_tokens=8)
pieces = list(engine.completions.create(model=generator, prompt=prompt, max_tokens=8, stream=True))
seen["completions"] = {
    "text": text.choices[0].text,
    "object": text.object,
    "streamed": "".join(p.choices[0].text for p in pieces if p.choices),
    "chunks": len(pieces),
}

one = main.embeddings.create(model=embedder, input="Bees dance to tell where flowers are.")
many = main.embeddings.create(model=embedder, input=["bees", "flowers", "honey"])
seen["embeddings"] = {"one": len(one.data), "dim": len(one.data[0].embedding), "many": len(many.data)}

seen["bad_key"] = error_of(lambda: client("wrong-key").models.list())
seen["unknown_model"] = error_of(lambda: main.chat.completions.create(model="no-such-bot", messages=ask))
seen["not_allowed"] = error_of(lambda: client(limited_key).chat.completions.create(model=generator, messages=ask))
seen["no_question"] = error_of(
    lambda: main.chat.completions.create(model=bot, messages=[{"role": "assistant", "content": "hi"}])
)
seen["too_large"] = error_of(
    lambda: main.chat.completions.create(model=bot, messages=[{"role": "user", "content": "x" * 2_000_000}])
)

# Slow clients: streams opened, then left unread and closed. Their answers must stop.
flood = client(flood_key)
for _ in range(3):
    stream = flood.chat.completions.create(model=bot, messages=ask, stream=True)
    stream.response.close()
seen["overloaded"] = error_of(lambda: flood.chat.completions.create(model=bot, messages=ask))

print(json.dumps(seen))
