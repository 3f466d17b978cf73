// safetensors.cpp — lathe_model_load_safetensors: a read-only POSIX mmap of one .safetensors
// file, a minimal JSON parse of its header (written here: objects, arrays, strings, numbers,
// true/false/null), and F32/F16/BF16 -> f32 conversion straight from the mapped bytes into the
// model's weights. Every tensor is checked (name known, shape equal, bytes inside the file) before
// any weight changes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common.h"
#include "model.h"

namespace lathe {

namespace {

// Both helpers throw for their caller: the error names the caller's line (common.h).
[[noreturn]] void bad(const std::string& path, const std::string& why, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  throw Error(LATHE_ERR_INVALID_ARGUMENT, path + ": " + why, file, line);
}

struct Json {
  enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
  const Json* get(const std::string& k) const {
    for (auto& kv : obj)
      if (kv.first == k) return &kv.second;
    return nullptr;
  }
};

struct Parser {
  const char* p;
  const char* e;
  const std::string& path;
  int depth = 0;
  [[noreturn]] void fail(const std::string& why, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    bad(path, "malformed safetensors header JSON: " + why, file, line);
  }
  void ws() {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  }
  char peek() {
    ws();
    if (p >= e) fail("unexpected end");
    return *p;
  }
  void expect(char ch) {
    if (peek() != ch) fail(std::string("expected '") + ch + "'");
    ++p;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (p >= e) fail("unterminated string");
      char ch = *p++;
      if (ch == '"') return out;
      if (ch != '\\') { out += ch; continue; }
      if (p >= e) fail("unterminated escape");
      char esc = *p++;
      switch (esc) {
        case '"': case '\\': case '/': out += esc; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (e - p < 4) fail("short \\u escape");
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            char h = *p++;
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= h - '0';
            else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
            else fail("bad \\u escape");
          }
          // names are ASCII in practice; encode the BMP code point as UTF-8 (surrogates kept as is)
          if (cp < 0x80) out += static_cast<char>(cp);
          else if (cp < 0x800) { out += static_cast<char>(0xC0 | (cp >> 6)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
          else { out += static_cast<char>(0xE0 | (cp >> 12)); out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); out += static_cast<char>(0x80 | (cp & 0x3F)); }
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  Json value() {
    if (++depth > 64) fail("nested too deeply");
    Json j;
    char ch = peek();
    if (ch == '{') {
      ++p;
      j.kind = Json::Obj;
      if (peek() == '}') ++p;
      else
        while (true) {
          std::string k = string();
          expect(':');
          j.obj.emplace_back(std::move(k), value());
          char nx = peek();
          ++p;
          if (nx == '}') break;
          if (nx != ',') fail("expected ',' or '}'");
        }
    } else if (ch == '[') {
      ++p;
      j.kind = Json::Arr;
      if (peek() == ']') ++p;
      else
        while (true) {
          j.arr.push_back(value());
          char nx = peek();
          ++p;
          if (nx == ']') break;
          if (nx != ',') fail("expected ',' or ']'");
        }
    } else if (ch == '"') {
      j.kind = Json::Str;
      j.str = string();
    } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
      const char* s = p;
      while (p < e && (std::strchr("+-.eE", *p) || (*p >= '0' && *p <= '9'))) ++p;
      j.kind = Json::Num;
      j.num = std::stod(std::string(s, p));
    } else {
      auto word = [&](const char* w, Json::Kind k) {
        const size_t n = std::strlen(w);
        if (static_cast<size_t>(e - p) < n || std::memcmp(p, w, n) != 0) return false;
        p += n;
        j.kind = k;
        return true;
      };
      if (!word("true", Json::Bool) && !word("false", Json::Bool) && !word("null", Json::Null)) fail("unexpected character");
    }
    --depth;
    return j;
  }
};

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
  if (exp == 0x1F) bits = sign | 0x7F800000u | (man << 13);  // inf / nan
  else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (man == 0) bits = sign;
  else {  // subnormal: normalise
    int e = -1;
    do { man <<= 1; ++e; } while (!(man & 0x400u));
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

struct Mapping {
  void* addr = MAP_FAILED;
  size_t len = 0;
  int fd = -1;
  ~Mapping() {
    if (addr != MAP_FAILED) munmap(addr, len);
    if (fd >= 0) close(fd);
  }
};

struct Item {
  Tensor* t;
  std::string name;
  int dtype;  // 0 F32, 1 F16, 2 BF16
  const uint8_t* data;
  size_t count;
};

}  // namespace

void model_load_safetensors(lathe_model& m, const std::string& path) {
  Mapping map;
  map.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (map.fd < 0) bad(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(map.fd, &st) != 0) bad(path, std::string("cannot stat: ") + std::strerror(errno));
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) bad(path, "truncated safetensors file: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  map.addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, map.fd, 0);
  if (map.addr == MAP_FAILED) bad(path, std::string("mmap failed: ") + std::strerror(errno));
  map.len = size;
  const uint8_t* base = static_cast<const uint8_t*>(map.addr);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
  if (hlen > size - 8)
    bad(path, "truncated safetensors file: the header says " + std::to_string(hlen) + " bytes of JSON but the file has " + std::to_string(size - 8) +
                  " after the length");
  Parser parser{reinterpret_cast<const char*>(base + 8), reinterpret_cast<const char*>(base + 8 + hlen), path};
  const Json header = parser.value();
  if (header.kind != Json::Obj) bad(path, "the safetensors header is not a JSON object");
  const uint8_t* data = base + 8 + hlen;
  const uint64_t data_len = size - 8 - hlen;

  std::vector<Item> items;
  std::vector<std::string> unknown;
  for (auto& [name, info] : header.obj) {
    if (name == "__metadata__") continue;
    const Json* dt = info.get("dtype");
    const Json* shape = info.get("shape");
    const Json* offs = info.get("data_offsets");
    if (info.kind != Json::Obj || !dt || dt->kind != Json::Str || !shape || shape->kind != Json::Arr || !offs || offs->kind != Json::Arr ||
        offs->arr.size() != 2 || offs->arr[0].kind != Json::Num || offs->arr[1].kind != Json::Num)
      bad(path, "tensor '" + name + "': header entry needs dtype, shape and data_offsets [begin, end]");
    auto it = m.weights.find(name);
    if (it == m.weights.end()) {
      unknown.push_back(name);
      continue;
    }
    int dtype;
    size_t esize;
    if (dt->str == "F32") dtype = 0, esize = 4;
    else if (dt->str == "F16") dtype = 1, esize = 2;
    else if (dt->str == "BF16") dtype = 2, esize = 2;
    else throw Error(LATHE_ERR_UNSUPPORTED, path + ": tensor '" + name + "' has dtype " + dt->str + " (supported: F32, F16, BF16)");
    std::vector<int64_t> sh;
    for (auto& d : shape->arr) {
      if (d.kind != Json::Num || d.num < 0) bad(path, "tensor '" + name + "': bad shape");
      sh.push_back(static_cast<int64_t>(d.num));
    }
    Tensor& t = it->second;
    if (sh != t.shape) bad(path, "tensor '" + name + "' has shape " + shape_str(sh) + ", the model expects " + shape_str(t.shape));
    if (t.q4) bad(path, "tensor '" + name + "' is stored as NF4 (lathe_model_quantize_nf4 was called); load weights before quantising");
    if (!t.bf16.empty() || (name == "model.embed_tokens.weight" && !m.tied_head16.empty()))
      bad(path, "tensor '" + name + "' is stored as bf16 (lathe_model_convert_bf16 was called); load weights before converting");
    const double b = offs->arr[0].num, e = offs->arr[1].num;
    const size_t count = static_cast<size_t>(t.numel());
    if (b < 0 || e < b || e - b != static_cast<double>(count * esize))
      bad(path, "tensor '" + name + "': data_offsets [" + std::to_string(static_cast<int64_t>(b)) + ", " + std::to_string(static_cast<int64_t>(e)) +
                    "] do not span " + std::to_string(count) + " " + dt->str + " values");
    if (e > static_cast<double>(data_len))
      bad(path, "truncated safetensors file: tensor '" + name + "' ends at byte " + std::to_string(static_cast<uint64_t>(e)) +
                    " of the data section, which has only " + std::to_string(data_len) + " bytes");
    items.push_back({&t, name, dtype, data + static_cast<size_t>(b), count});
  }
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 8; ++i) list += (i ? ", " : "") + unknown[i];
    if (unknown.size() > 8) list += ", … (" + std::to_string(unknown.size()) + " in all)";
    std::string hint;
    for (auto& n : unknown)
      if (n == "lm_head.weight" && m.cfg.tie_word_embeddings) hint = " (lm_head.weight: the model ties word embeddings)";
    bad(path, "tensors the model does not know: " + list + hint);
  }
  ThreadPool& pool = *m.pool;
  for (Item& it : items) {
    float* dst = it.t->data.data();
    const uint8_t* src = it.data;
    const int dtype = it.dtype;
    parallel_rows(pool, static_cast<int64_t>(it.count), [&](int64_t b, int64_t e, int) {
      if (dtype == 0) {
        std::memcpy(dst + b, src + 4 * b, 4 * static_cast<size_t>(e - b));
        return;
      }
      for (int64_t i = b; i < e; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);  // little-endian host assumed (x86-64, aarch64)
        dst[i] = dtype == 1 ? f16_to_f32(h) : bf16_to_f32(h);
      }
    });
    it.t->set = true;
  }
}

}  // namespace lathe
