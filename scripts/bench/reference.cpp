// Benchmark reference for Lore: measures the vendored llama.cpp (the very libraries the
// Rust build links) through its public C API, the way llama-bench, llama-batched-bench
// and llama-embedding do. Those tools cannot be built from the copy inside
// llama-cpp-sys-2 (it has no tools/ or examples/ sources), hence this program.
//
//   reference bench   -m MODEL -p N_PROMPT -n N_GEN            (llama-bench pp / tg)
//   reference batched -m MODEL -p N_PROMPT -n N_GEN -np 1,4,8  (llama-batched-bench)
//   reference embed   -m MODEL -f TEXTS.txt                    (llama-embedding, mean pooling)
//
// Common options: -t THREADS (default: CPUs this process may run on), -ngl GPU_LAYERS (0),
// -r REPS (3), -b N_BATCH (512), -ub N_UBATCH (512), -fa auto|on|off (auto), -v (llama.cpp
// logs to stderr), --cos (embed: print the cosine of the first two texts to stderr).
//
// Prints exactly one JSON object on stdout. Build with scripts/bench/build-reference.

#include "llama.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef REFERENCE_LINK
#define REFERENCE_LINK "unknown"
#endif

namespace {

using clk = std::chrono::steady_clock;

double seconds_since(clk::time_point t0) {
    return std::chrono::duration<double>(clk::now() - t0).count();
}

[[noreturn]] void die(const std::string & msg) {
    fprintf(stderr, "reference: %s\n", msg.c_str());
    exit(1);
}

void log_noop(enum ggml_log_level, const char *, void *) {}

struct Options {
    std::string mode;
    std::string model;
    std::string file;
    int threads = 0;
    int ngl = 0;
    int reps = 3;
    int n_batch = 512;
    int n_ubatch = 512;
    int n_prompt = 512;
    int n_gen = 128;
    std::vector<int> parallel = {1};
    llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
    std::string fa_name = "auto";
    bool verbose = false;
    bool cos = false;
};

int default_threads() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    unsigned n = std::thread::hardware_concurrency();
    return n > 0 ? (int) n : 1;
}

int to_int(const std::string & flag, const char * v) {
    char * end = nullptr;
    long x = strtol(v, &end, 10);
    if (!end || *end != '\0') die("bad value for " + flag + ": " + v);
    return (int) x;
}

void usage() {
    fprintf(stderr,
            "usage: reference bench|batched|embed -m MODEL.gguf [options]\n"
            "  bench:   -p N_PROMPT -n N_GEN\n"
            "  batched: -p N_PROMPT -n N_GEN -np N1[,N2,...]\n"
            "  embed:   -f TEXTS.txt (one text a line)\n"
            "  common:  -t THREADS -ngl GPU_LAYERS -r REPS -b N_BATCH -ub N_UBATCH -fa auto|on|off -v\n");
    exit(2);
}

Options parse(int argc, char ** argv) {
    if (argc < 2) usage();
    Options o;
    o.mode = argv[1];
    if (o.mode != "bench" && o.mode != "batched" && o.mode != "embed") usage();
    for (int i = 2; i < argc; i++) {
        std::string a = argv[i];
        auto val = [&]() -> const char * {
            if (i + 1 >= argc) die("missing value for " + a);
            return argv[++i];
        };
        if (a == "-m") o.model = val();
        else if (a == "-f") o.file = val();
        else if (a == "-t") o.threads = to_int(a, val());
        else if (a == "-ngl") o.ngl = to_int(a, val());
        else if (a == "-r") o.reps = to_int(a, val());
        else if (a == "-b") o.n_batch = to_int(a, val());
        else if (a == "-ub") o.n_ubatch = to_int(a, val());
        else if (a == "-p") o.n_prompt = to_int(a, val());
        else if (a == "-n") o.n_gen = to_int(a, val());
        else if (a == "-np") {
            o.parallel.clear();
            std::stringstream ss(val());
            std::string item;
            while (std::getline(ss, item, ',')) {
                if (item.empty()) continue;
                int n = to_int(a, item.c_str());
                if (n < 1) die("-np values must be >= 1");
                o.parallel.push_back(n);
            }
            if (o.parallel.empty()) die("-np needs at least one value");
        } else if (a == "-fa") {
            o.fa_name = val();
            if (o.fa_name == "auto") o.fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
            else if (o.fa_name == "on" || o.fa_name == "1") { o.fa = LLAMA_FLASH_ATTN_TYPE_ENABLED; o.fa_name = "on"; }
            else if (o.fa_name == "off" || o.fa_name == "0") { o.fa = LLAMA_FLASH_ATTN_TYPE_DISABLED; o.fa_name = "off"; }
            else die("-fa takes auto, on or off");
        } else if (a == "-v") o.verbose = true;
        else if (a == "--cos") o.cos = true;
        else if (a == "-h" || a == "--help") usage();
        else die("unknown option " + a);
    }
    if (o.model.empty()) die("-m MODEL.gguf is required");
    if (o.threads <= 0) o.threads = default_threads();
    if (o.reps < 1) die("-r must be >= 1");
    if (o.n_batch < 1 || o.n_ubatch < 1) die("-b and -ub must be >= 1");
    if (o.mode != "embed" && (o.n_prompt < 0 || o.n_gen < 0 || o.n_prompt + o.n_gen < 1)) die("bad -p / -n");
    if (o.mode == "batched" && (o.n_prompt < 1 || o.n_gen < 1)) die("batched needs -p >= 1 and -n >= 1");
    if (o.mode == "embed" && o.file.empty()) die("embed needs -f TEXTS.txt");
    return o;
}

// ---------------------------------------------------------------- small helpers

double mean(const std::vector<double> & v) {
    if (v.empty()) return 0.0;
    double s = 0;
    for (double x : v) s += x;
    return s / v.size();
}

// Sample standard deviation, as llama-bench reports it (0 for a single sample).
double stdev(const std::vector<double> & v) {
    if (v.size() <= 1) return 0.0;
    double m = mean(v), s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / (v.size() - 1));
}

std::string json_str(const std::string & s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += (char) c;
                }
        }
    }
    return out + "\"";
}

std::string json_num(double x) {
    if (!std::isfinite(x)) return "null";
    char buf[64];
    snprintf(buf, sizeof buf, "%.6g", x);
    return buf;
}

std::string json_arr(const std::vector<double> & v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); i++) {
        if (i) out += ",";
        out += json_num(v[i]);
    }
    return out + "]";
}

// Deterministic pseudo-random token ids (llama-bench uses std::rand() % n_vocab, unseeded).
struct TokenRng {
    uint64_t state = 0x9E3779B97F4A7C15ull;
    int32_t n_vocab;
    explicit TokenRng(int32_t n) : n_vocab(n) {}
    llama_token next() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        return (llama_token) (state % (uint64_t) n_vocab);
    }
};

void batch_add(llama_batch & b, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits) {
    const int i = b.n_tokens;
    b.token[i] = tok;
    b.pos[i] = pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = seq;
    b.logits[i] = logits;
    b.n_tokens++;
}

struct Common {
    llama_model * model = nullptr;
    std::string desc;
    std::string devices;  // JSON array of the backend devices that were available
};

Common load_model(const Options & o) {
    Common c;
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = o.ngl;
    c.model = llama_model_load_from_file(o.model.c_str(), mp);
    if (!c.model) die("cannot load model " + o.model);
    char buf[256] = {0};
    llama_model_desc(c.model, buf, sizeof buf);
    c.desc = buf;
    c.devices = "[";
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        if (i) c.devices += ",";
        c.devices += json_str(std::string(ggml_backend_dev_name(d)) + ": " + ggml_backend_dev_description(d));
    }
    c.devices += "]";
    return c;
}

llama_context * make_context(llama_model * model, const Options & o, llama_context_params cp) {
    cp.n_threads = o.threads;
    cp.n_threads_batch = o.threads;
    cp.flash_attn_type = o.fa;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create a context");
    return ctx;
}

void decode_or_die(llama_context * ctx, llama_batch b, const char * what) {
    int rc = llama_decode(ctx, b);
    if (rc != 0) die(std::string("llama_decode failed (") + what + "), rc=" + std::to_string(rc));
}

std::string common_json(const Options & o, const Common & c) {
    std::string s;
    s += "\"mode\":" + json_str(o.mode);
    s += ",\"model\":" + json_str(o.model);
    s += ",\"model_desc\":" + json_str(c.desc);
    s += ",\"threads\":" + std::to_string(o.threads);
    s += ",\"n_gpu_layers\":" + std::to_string(o.ngl);
    s += ",\"flash_attn\":" + json_str(o.fa_name);
    s += ",\"reps\":" + std::to_string(o.reps);
    s += ",\"link\":" + json_str(REFERENCE_LINK);
    s += ",\"devices\":" + c.devices;
    return s;
}

// ---------------------------------------------------------------- bench (llama-bench)

// llama-bench's test_prompt: n_prompt tokens in chunks of n_batch, only the last logits.
void run_pp(llama_context * ctx, const llama_vocab * vocab, TokenRng & rng, int n_prompt, int n_batch) {
    const bool add_bos = llama_vocab_get_add_bos(vocab);
    std::vector<llama_token> toks(n_batch);
    int done = 0;
    while (done < n_prompt) {
        int n = std::min(n_prompt - done, n_batch);
        toks[0] = (done == 0 && add_bos) ? llama_vocab_bos(vocab) : rng.next();
        for (int i = 1; i < n; i++) toks[i] = rng.next();
        decode_or_die(ctx, llama_batch_get_one(toks.data(), n), "pp");
        done += n;
    }
    llama_synchronize(ctx);
}

// llama-bench's test_gen: one token per decode, synchronised, random tokens fed back.
void run_tg(llama_context * ctx, const llama_vocab * vocab, TokenRng & rng, int n_gen) {
    llama_token tok = llama_vocab_get_add_bos(vocab) ? llama_vocab_bos(vocab) : rng.next();
    for (int i = 0; i < n_gen; i++) {
        decode_or_die(ctx, llama_batch_get_one(&tok, 1), "tg");
        llama_synchronize(ctx);
        tok = rng.next();
    }
}

int mode_bench(const Options & o) {
    Common c = load_model(o);
    const llama_vocab * vocab = llama_model_get_vocab(c.model);
    TokenRng rng(llama_vocab_n_tokens(vocab));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (o.n_prompt + o.n_gen);
    cp.n_batch = (uint32_t) o.n_batch;
    cp.n_ubatch = (uint32_t) o.n_ubatch;
    llama_context * ctx = make_context(c.model, o, cp);
    llama_memory_t mem = llama_get_memory(ctx);
    const int n_batch = (int) llama_n_batch(ctx);  // llama.cpp may lower it to n_ctx

    // warm-up: one n_batch chunk of prompt and one generated token
    llama_memory_clear(mem, false);
    if (o.n_prompt > 0) run_pp(ctx, vocab, rng, std::min(o.n_prompt, n_batch), n_batch);
    llama_memory_clear(mem, false);
    if (o.n_gen > 0) run_tg(ctx, vocab, rng, 1);

    std::vector<double> pp, tg;
    for (int r = 0; r < o.reps; r++) {
        if (o.n_prompt > 0) {
            llama_memory_clear(mem, false);
            auto t0 = clk::now();
            run_pp(ctx, vocab, rng, o.n_prompt, n_batch);
            pp.push_back(o.n_prompt / seconds_since(t0));
        }
        if (o.n_gen > 0) {
            llama_memory_clear(mem, false);
            auto t0 = clk::now();
            run_tg(ctx, vocab, rng, o.n_gen);
            tg.push_back(o.n_gen / seconds_since(t0));
        }
    }

    std::string s = "{" + common_json(o, c);
    s += ",\"n_prompt\":" + std::to_string(o.n_prompt);
    s += ",\"n_gen\":" + std::to_string(o.n_gen);
    s += ",\"n_batch\":" + std::to_string(n_batch);
    s += ",\"n_ubatch\":" + std::to_string(llama_n_ubatch(ctx));
    s += ",\"n_ctx\":" + std::to_string(llama_n_ctx(ctx));
    s += ",\"pp_tps_mean\":" + json_num(pp.empty() ? NAN : mean(pp));
    s += ",\"pp_tps_std\":" + json_num(pp.empty() ? NAN : stdev(pp));
    s += ",\"tg_tps_mean\":" + json_num(tg.empty() ? NAN : mean(tg));
    s += ",\"tg_tps_std\":" + json_num(tg.empty() ? NAN : stdev(tg));
    s += ",\"pp_tps\":" + json_arr(pp);
    s += ",\"tg_tps\":" + json_arr(tg);
    s += "}";
    printf("%s\n", s.c_str());

    llama_free(ctx);
    llama_model_free(c.model);
    return 0;
}

// ---------------------------------------------------------------- batched (llama-batched-bench)

// llama-batched-bench's decode_helper: the batch in n_batch views.
void decode_chunked(llama_context * ctx, llama_batch & b, int n_batch, bool sync) {
    for (int i = 0; i < b.n_tokens; i += n_batch) {
        const int n = std::min(n_batch, b.n_tokens - i);
        llama_batch view = {n, b.token + i, nullptr, b.pos + i, b.n_seq_id + i, b.seq_id + i, b.logits + i};
        decode_or_die(ctx, view, "batched");
        if (sync) llama_synchronize(ctx);
    }
}

int mode_batched(const Options & o) {
    Common c = load_model(o);
    const llama_vocab * vocab = llama_model_get_vocab(c.model);
    TokenRng rng(llama_vocab_n_tokens(vocab));
    const int np_max = *std::max_element(o.parallel.begin(), o.parallel.end());
    const int pp = o.n_prompt, tg = o.n_gen;

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (np_max * (pp + tg));
    cp.n_batch = (uint32_t) o.n_batch;
    cp.n_ubatch = (uint32_t) o.n_ubatch;
    cp.n_seq_max = (uint32_t) np_max;
    cp.kv_unified = true;
    llama_context * ctx = make_context(c.model, o, cp);
    llama_memory_t mem = llama_get_memory(ctx);
    const int n_batch = (int) llama_n_batch(ctx);

    llama_batch batch = llama_batch_init(std::max(np_max * pp, np_max), 0, 1);

    // warm-up, as llama-batched-bench: 16 tokens of sequence 0
    batch.n_tokens = 0;
    for (int i = 0; i < 16; i++) batch_add(batch, rng.next(), i, 0, false);
    llama_memory_clear(mem, false);
    decode_chunked(ctx, batch, n_batch, true);

    std::string results = "[";
    for (size_t k = 0; k < o.parallel.size(); k++) {
        const int np = o.parallel[k];
        std::vector<double> t_pp_v, t_tg_v, s_pp, s_tg, s_all;
        for (int r = 0; r < o.reps; r++) {
            // prefill: position-major, one token per sequence per position; logits on the last
            batch.n_tokens = 0;
            for (int i = 0; i < pp; i++)
                for (int j = 0; j < np; j++) batch_add(batch, rng.next(), i, j, i == pp - 1);
            llama_memory_clear(mem, false);
            auto t0 = clk::now();
            decode_chunked(ctx, batch, n_batch, false);
            llama_synchronize(ctx);
            const double t_pp = seconds_since(t0);

            auto t1 = clk::now();
            for (int i = 0; i < tg; i++) {
                batch.n_tokens = 0;
                for (int j = 0; j < np; j++) batch_add(batch, rng.next(), pp + i, j, true);
                decode_chunked(ctx, batch, n_batch, true);
            }
            const double t_tg = seconds_since(t1);

            t_pp_v.push_back(t_pp);
            t_tg_v.push_back(t_tg);
            s_pp.push_back(np * pp / t_pp);
            s_tg.push_back(np * tg / t_tg);
            s_all.push_back(np * (pp + tg) / (t_pp + t_tg));
        }
        if (k) results += ",";
        results += "{\"np\":" + std::to_string(np);
        results += ",\"pp_tps\":" + json_num(mean(s_pp));
        results += ",\"tg_tps\":" + json_num(mean(s_tg));
        results += ",\"total_tps\":" + json_num(mean(s_all));
        results += ",\"pp_tps_std\":" + json_num(stdev(s_pp));
        results += ",\"tg_tps_std\":" + json_num(stdev(s_tg));
        results += ",\"total_tps_std\":" + json_num(stdev(s_all));
        results += ",\"t_pp_s\":" + json_num(mean(t_pp_v));
        results += ",\"t_tg_s\":" + json_num(mean(t_tg_v));
        results += ",\"tg_tps_runs\":" + json_arr(s_tg);
        results += "}";
    }
    results += "]";

    std::string s = "{" + common_json(o, c);
    s += ",\"n_prompt\":" + std::to_string(pp);
    s += ",\"n_gen\":" + std::to_string(tg);
    s += ",\"n_batch\":" + std::to_string(n_batch);
    s += ",\"n_ubatch\":" + std::to_string(llama_n_ubatch(ctx));
    s += ",\"n_ctx\":" + std::to_string(llama_n_ctx(ctx));
    s += ",\"kv_unified\":true";
    s += ",\"results\":" + results + "}";
    printf("%s\n", s.c_str());

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(c.model);
    return 0;
}

// ---------------------------------------------------------------- embed (llama-embedding)

std::vector<llama_token> tokenize(const llama_vocab * vocab, const std::string & text) {
    std::vector<llama_token> toks(text.size() + 8);
    int n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), (int32_t) toks.size(),
                           /*add_special=*/true, /*parse_special=*/false);
    if (n < 0) {
        if (n == INT32_MIN) die("tokenization overflow");
        toks.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), toks.data(), (int32_t) toks.size(), true, false);
        if (n < 0) die("tokenization failed");
    }
    toks.resize(n);
    return toks;
}

const int EMBED_MAX_SEQS = 64;

struct EmbedRun {
    size_t tokens = 0;
    size_t batches = 0;
};

// Tokenise, truncate (keeping the last token, the closing [SEP]), pack whole texts into
// batches of at most n_batch tokens and EMBED_MAX_SEQS sequences, decode, pool, normalise.
// limit_batches > 0 stops after that many batches (warm-up).
EmbedRun embed_all(llama_context * ctx, const llama_vocab * vocab, const std::vector<std::string> & texts,
                   int n_batch, int n_embd, llama_batch & batch, std::vector<std::vector<float>> & out,
                   int limit_batches = 0) {
    EmbedRun run;
    std::vector<std::vector<llama_token>> toks;
    toks.reserve(texts.size());
    for (const auto & t : texts) {
        auto v = tokenize(vocab, t);
        if (v.empty()) die("a text gave no tokens");
        if ((int) v.size() > n_batch) {
            llama_token last = v.back();
            v.resize(n_batch - 1);
            v.push_back(last);
        }
        run.tokens += v.size();
        toks.push_back(std::move(v));
    }
    out.resize(texts.size());
    llama_memory_t mem = llama_get_memory(ctx);
    size_t start = 0;
    while (start < toks.size()) {
        size_t end = start;
        int used = 0;
        while (end < toks.size() && (int) (end - start) < EMBED_MAX_SEQS && used + (int) toks[end].size() <= n_batch) {
            used += (int) toks[end].size();
            end++;
        }
        batch.n_tokens = 0;
        for (size_t s = start; s < end; s++) {
            const auto & v = toks[s];
            for (size_t i = 0; i < v.size(); i++) batch_add(batch, v[i], (llama_pos) i, (llama_seq_id) (s - start), true);
        }
        llama_memory_clear(mem, true);
        decode_or_die(ctx, batch, "embed");
        for (size_t s = start; s < end; s++) {
            const float * e = llama_get_embeddings_seq(ctx, (llama_seq_id) (s - start));
            if (!e) die("no pooled embedding for a sequence");
            double norm = 0;
            for (int i = 0; i < n_embd; i++) norm += (double) e[i] * e[i];
            norm = std::sqrt(norm);
            const float scale = norm > 0 ? (float) (1.0 / norm) : 0.0f;
            auto & dst = out[s];
            dst.resize(n_embd);
            for (int i = 0; i < n_embd; i++) dst[i] = e[i] * scale;
        }
        run.batches++;
        start = end;
        if (limit_batches > 0 && (int) run.batches >= limit_batches) break;
    }
    return run;
}

int mode_embed(const Options & o) {
    std::vector<std::string> texts;
    {
        std::ifstream in(o.file);
        if (!in) die("cannot read " + o.file);
        std::string line;
        while (std::getline(in, line)) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (!line.empty()) texts.push_back(line);
        }
    }
    if (texts.empty()) die("no texts in " + o.file);

    Common c = load_model(o);
    const llama_vocab * vocab = llama_model_get_vocab(c.model);
    const int n_ctx_train = llama_model_n_ctx_train(c.model);
    const int n = std::max(8, std::min(o.n_batch, n_ctx_train > 0 ? n_ctx_train : o.n_batch));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) n;
    cp.n_batch = (uint32_t) n;
    cp.n_ubatch = (uint32_t) n;
    cp.n_seq_max = EMBED_MAX_SEQS;
    cp.embeddings = true;
    cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;
    llama_context * ctx = make_context(c.model, o, cp);
    if (llama_pooling_type(ctx) != LLAMA_POOLING_TYPE_MEAN) die("the context does not use mean pooling");
    const int n_embd = llama_model_n_embd(c.model);

    llama_batch batch = llama_batch_init(n, 0, 1);
    std::vector<std::vector<float>> out;

    // warm-up: the first batch
    embed_all(ctx, vocab, texts, n, n_embd, batch, out, 1);

    std::vector<double> tps;
    EmbedRun run;
    for (int r = 0; r < o.reps; r++) {
        auto t0 = clk::now();
        run = embed_all(ctx, vocab, texts, n, n_embd, batch, out);
        tps.push_back(texts.size() / seconds_since(t0));
    }

    if (o.cos && out.size() >= 2) {
        double dot = 0;
        for (int i = 0; i < n_embd; i++) dot += (double) out[0][i] * out[1][i];
        fprintf(stderr, "cosine(text 1, text 2) = %.4f\n", dot);
    }

    std::vector<double> head;
    for (int i = 0; i < std::min(4, n_embd); i++) head.push_back(out[0][i]);
    std::vector<double> tok_s;
    for (double x : tps) tok_s.push_back(x * run.tokens / texts.size());

    std::string s = "{" + common_json(o, c);
    s += ",\"texts\":" + std::to_string(texts.size());
    s += ",\"tokens\":" + std::to_string(run.tokens);
    s += ",\"batches\":" + std::to_string(run.batches);
    s += ",\"n_batch\":" + std::to_string(n);
    s += ",\"n_embd\":" + std::to_string(n_embd);
    s += ",\"texts_per_s_mean\":" + json_num(mean(tps));
    s += ",\"texts_per_s_std\":" + json_num(stdev(tps));
    s += ",\"tokens_per_s_mean\":" + json_num(mean(tok_s));
    s += ",\"texts_per_s\":" + json_arr(tps);
    s += ",\"first_vector_head\":" + json_arr(head);
    s += "}";
    printf("%s\n", s.c_str());

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(c.model);
    return 0;
}

}  // namespace

int main(int argc, char ** argv) {
    Options o = parse(argc, argv);
    if (!o.verbose) llama_log_set(log_noop, nullptr);
    llama_backend_init();  // in a GGML_BACKEND_DL build this loads the backend modules
    int rc;
    if (o.mode == "bench") rc = mode_bench(o);
    else if (o.mode == "batched") rc = mode_batched(o);
    else rc = mode_embed(o);
    fflush(stdout);
    llama_backend_free();
    return rc;
}
