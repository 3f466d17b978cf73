// binding.cpp — the Node-API face of lathe_engine.h, and nothing more: one JS class `Model`
// whose methods map one to one onto the C functions, and plain functions for the calls that need
// no model (nf4Roundtrip, loraMerge). ts/native.ts declares every type this file
// accepts and returns; ts/index.ts is the public wrapper.
//
// Rules kept here:
// - the process never aborts: a failed lathe_* call, a bad argument or a failed allocation
//   becomes a JS Error with a `code` (the engine's lathe_status_string: INVALID_ARGUMENT,
//   UNSUPPORTED, OUT_OF_MEMORY, NAN, CANCELLED, INTERNAL; or the binding's own
//   FAILED_PRECONDITION) and the engine's message;
// - forwardBackward, adamwStep, hiddenStates and loraMerge run on libuv's thread pool
//   (Napi::AsyncWorker) and return Promises; while one of the first three runs its model is busy
//   and every other call fails with FAILED_PRECONDITION (the engine is not re-entrant on one model);
// - array lengths are checked here, because the C API takes bare pointers.

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "lathe_engine.h"

namespace {

constexpr size_t kErrLen = 1024;

Napi::Error CodedError(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

[[noreturn]] void ThrowCoded(Napi::Env env, const char* code, const std::string& message) {
  throw CodedError(env, code, message);
}

[[noreturn]] void ThrowArg(Napi::Env env, const std::string& message) {
  Napi::TypeError error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "INVALID_ARGUMENT"));
  throw error;
}

// The engine writes its message into `err`; an empty one still says which call failed.
std::string EngineMessage(const char* call, const char* err) {
  if (err[0] != '\0') return err;
  return std::string(call) + " failed without a message";
}

void Check(Napi::Env env, lathe_status status, const char* call, const char* err) {
  if (status != LATHE_OK) ThrowCoded(env, lathe_status_string(status), EngineMessage(call, err));
}

// ---- argument readers: each names the field it rejects -------------------------------------

Napi::Object ObjectArg(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsObject()) ThrowArg(info.Env(), std::string(what) + " must be an object");
  return info[index].As<Napi::Object>();
}

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsString()) ThrowArg(info.Env(), std::string(what) + " must be a string");
  return info[index].As<Napi::String>().Utf8Value();
}

Napi::Float32Array Float32Arg(const Napi::CallbackInfo& info, size_t index, const std::string& what) {
  if (info.Length() <= index || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowArg(info.Env(), what + " must be a Float32Array");
  }
  return info[index].As<Napi::Float32Array>();
}

double NumberField(const Napi::Object& obj, const char* owner, const char* key) {
  Napi::Value value = obj.Get(key);
  if (!value.IsNumber()) ThrowArg(obj.Env(), std::string(owner) + "." + key + " must be a number");
  double x = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x)) ThrowArg(obj.Env(), std::string(owner) + "." + key + " must be finite");
  return x;
}

int32_t IntField(const Napi::Object& obj, const char* owner, const char* key) {
  double x = NumberField(obj, owner, key);
  if (x != std::floor(x) || x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max()) {
    ThrowArg(obj.Env(), std::string(owner) + "." + key + " must be a 32-bit integer, got " + std::to_string(x));
  }
  return static_cast<int32_t>(x);
}

bool BoolField(const Napi::Object& obj, const char* owner, const char* key) {
  Napi::Value value = obj.Get(key);
  if (!value.IsBoolean()) ThrowArg(obj.Env(), std::string(owner) + "." + key + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

// An Int32Array, copied (the worker thread must not touch JS memory).
std::vector<int32_t> Int32Values(const Napi::Object& obj, const char* owner, const char* key) {
  Napi::Value value = obj.Get(key);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowArg(obj.Env(), std::string(owner) + "." + key + " must be an Int32Array");
  }
  Napi::Int32Array array = value.As<Napi::Int32Array>();
  return std::vector<int32_t>(array.Data(), array.Data() + array.ElementLength());
}

// Int32Array of exactly `count` (batch*seq) elements, copied.
std::vector<int32_t> Int32Field(const Napi::Object& obj, const char* owner, const char* key, size_t count) {
  std::vector<int32_t> values = Int32Values(obj, owner, key);
  if (values.size() != count) {
    ThrowArg(obj.Env(), std::string(owner) + "." + key + " has " + std::to_string(values.size()) +
                            " elements, expected batch*seq = " + std::to_string(count));
  }
  return values;
}

// `backend` keeps the string config.backend points into until lathe_model_init has read it.
lathe_model_config ReadModelConfig(const Napi::Object& obj, std::string& backend) {
  const char* o = "config";
  lathe_model_config c{};
  c.vocab_size = IntField(obj, o, "vocabSize");
  c.hidden_size = IntField(obj, o, "hiddenSize");
  c.intermediate_size = IntField(obj, o, "intermediateSize");
  c.num_layers = IntField(obj, o, "numLayers");
  c.num_heads = IntField(obj, o, "numHeads");
  c.num_kv_heads = IntField(obj, o, "numKvHeads");
  c.head_dim = IntField(obj, o, "headDim");
  c.rms_norm_eps = static_cast<float>(NumberField(obj, o, "rmsNormEps"));
  c.rope_theta = static_cast<float>(NumberField(obj, o, "ropeTheta"));
  Napi::Value scaling = obj.Get("ropeScaling");
  if (scaling.IsNull()) {
    c.rope_scaling = LATHE_ROPE_NONE;
  } else if (scaling.IsObject()) {
    Napi::Object s = scaling.As<Napi::Object>();
    const char* so = "config.ropeScaling";
    Napi::Value type = s.Get("type");
    if (!type.IsString() || type.As<Napi::String>().Utf8Value() != "llama3") {
      ThrowArg(obj.Env(), "config.ropeScaling.type must be \"llama3\"");
    }
    c.rope_scaling = LATHE_ROPE_LLAMA3;
    c.rope_factor = static_cast<float>(NumberField(s, so, "factor"));
    c.rope_low_freq_factor = static_cast<float>(NumberField(s, so, "lowFreqFactor"));
    c.rope_high_freq_factor = static_cast<float>(NumberField(s, so, "highFreqFactor"));
    c.rope_original_max_position = IntField(s, so, "originalMaxPosition");
  } else {
    ThrowArg(obj.Env(), "config.ropeScaling must be an object or null");
  }
  c.tie_word_embeddings = BoolField(obj, o, "tieWordEmbeddings") ? 1 : 0;
  c.attention_bias = BoolField(obj, o, "attentionBias") ? 1 : 0;
  c.num_threads = IntField(obj, o, "numThreads");
  Napi::Value name = obj.Get("backend");
  if (name.IsString()) {
    backend = name.As<Napi::String>().Utf8Value();
    c.backend = backend.c_str();
  } else if (!name.IsNull()) {
    ThrowArg(obj.Env(), "config.backend must be a string or null");
  }
  return c;
}

uint32_t ModuleBit(Napi::Env env, const std::string& name, const char* what = "lora.targetModules") {
  static const struct { const char* name; uint32_t bit; } kModules[] = {
      {"q_proj", LATHE_LORA_Q},       {"k_proj", LATHE_LORA_K},   {"v_proj", LATHE_LORA_V},
      {"o_proj", LATHE_LORA_O},       {"gate_proj", LATHE_LORA_GATE}, {"up_proj", LATHE_LORA_UP},
      {"down_proj", LATHE_LORA_DOWN}, {"lm_head", LATHE_LORA_LM_HEAD},
  };
  for (const auto& m : kModules) {
    if (name == m.name) return m.bit;
  }
  ThrowArg(env, std::string(what) + ": unknown module \"" + name +
                    "\" (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head)");
}

lathe_lora_config ReadLoraConfig(const Napi::Object& obj) {
  const char* o = "lora";
  lathe_lora_config c{};
  c.r = IntField(obj, o, "r");
  c.alpha = static_cast<float>(NumberField(obj, o, "alpha"));
  c.dropout = static_cast<float>(NumberField(obj, o, "dropout"));
  c.use_rslora = BoolField(obj, o, "useRslora") ? 1 : 0;
  Napi::Value modules = obj.Get("targetModules");
  if (!modules.IsArray()) ThrowArg(obj.Env(), "lora.targetModules must be an array of module names");
  Napi::Array list = modules.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsString()) ThrowArg(obj.Env(), "lora.targetModules must be an array of module names");
    c.target_modules |= ModuleBit(obj.Env(), item.As<Napi::String>().Utf8Value());
  }
  Napi::Value seed = obj.Get("seed");
  if (seed.IsBigInt()) {
    bool lossless = false;
    c.seed = seed.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowArg(obj.Env(), "lora.seed must fit in an unsigned 64-bit integer");
  } else {
    double x = NumberField(obj, o, "seed");
    if (x < 0 || x != std::floor(x) || x > 9007199254740991.0) ThrowArg(obj.Env(), "lora.seed must be a non-negative safe integer or a bigint");
    c.seed = static_cast<uint64_t>(x);
  }
  return c;
}

// ---- the model ----------------------------------------------------------------------------

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {
                           InstanceMethod<&Model::SetWeight>("setWeight"),
                           InstanceMethod<&Model::LoraInit>("loraInit"),
                           InstanceMethod<&Model::LoraSet>("loraSet"),
                           InstanceMethod<&Model::LoraGet>("loraGet"),
                           InstanceMethod<&Model::LoraGrad>("loraGrad"),
                           InstanceMethod<&Model::ZeroGrad>("zeroGrad"),
                           InstanceMethod<&Model::ForwardBackward>("forwardBackward"),
                           InstanceMethod<&Model::AdamwStep>("adamwStep"),
                           InstanceMethod<&Model::HiddenStates>("hiddenStates"),
                           InstanceMethod<&Model::QuantizeNf4>("quantizeNf4"),
                           InstanceMethod<&Model::ConvertBf16>("convertBf16"),
                           InstanceMethod<&Model::Memory>("memory"),
                           InstanceMethod<&Model::SetGradientCheckpointing>("setGradientCheckpointing"),
                           InstanceMethod<&Model::ActivationBytes>("activationBytes"),
                           InstanceMethod<&Model::Backend>("backend"),
                           InstanceMethod<&Model::LoadSafetensors>("loadSafetensors"),
                           InstanceMethod<&Model::AdamwStateGet>("adamwStateGet"),
                           InstanceMethod<&Model::AdamwStateSet>("adamwStateSet"),
                           InstanceMethod<&Model::AdamwStepCountGet>("adamwStepCountGet"),
                           InstanceMethod<&Model::AdamwStepCountSet>("adamwStepCountSet"),
                           InstanceMethod<&Model::RngStateGet>("rngStateGet"),
                           InstanceMethod<&Model::RngStateSet>("rngStateSet"),
                           InstanceMethod<&Model::Free>("free"),
                       });
  }

  explicit Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
    std::string backend;
    lathe_model_config config = ReadModelConfig(ObjectArg(info, 0, "config"), backend);
    char err[kErrLen] = {0};
    lathe_status status = lathe_model_init(&config, &model_, err, sizeof err);
    if (status != LATHE_OK) {
      model_ = nullptr;
      Check(info.Env(), status, "lathe_model_init", err);
    }
  }

  ~Model() override { Release(); }

  // Called on the main thread when a worker of this model has finished.
  void WorkerDone() {
    busy_ = false;
    if (free_pending_) Release();
  }

  lathe_model* handle() const { return model_; }

 private:
  void Release() {
    if (model_ != nullptr) lathe_model_free(model_);
    model_ = nullptr;
  }

  // Every call starts here: a freed or busy model is a usage error, not an engine failure.
  lathe_model* Ready(Napi::Env env) {
    if (model_ == nullptr || free_pending_) ThrowCoded(env, "FAILED_PRECONDITION", "the model was freed");
    if (busy_) ThrowCoded(env, "FAILED_PRECONDITION", "the model is busy: wait for the pending forwardBackward, adamwStep or hiddenStates");
    return model_;
  }

  Napi::Value SetWeight(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    std::string name = StringArg(info, 0, "name");
    Napi::Float32Array data = Float32Arg(info, 1, "data of " + name);
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_set_weight(m, name.c_str(), data.Data(), data.ElementLength(), err, sizeof err),
          "lathe_model_set_weight", err);
    return info.Env().Undefined();
  }

  Napi::Value LoraInit(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    lathe_lora_config config = ReadLoraConfig(ObjectArg(info, 0, "lora"));
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_lora_init(m, &config, err, sizeof err), "lathe_lora_init", err);
    return info.Env().Undefined();
  }

  Napi::Value LoraSet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    std::string name = StringArg(info, 0, "name");
    Napi::Float32Array data = Float32Arg(info, 1, "data of " + name);
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_lora_set(m, name.c_str(), data.Data(), data.ElementLength(), err, sizeof err), "lathe_lora_set", err);
    return info.Env().Undefined();
  }

  Napi::Value LoraGet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    std::string name = StringArg(info, 0, "name");
    Napi::Float32Array out = Float32Arg(info, 1, "out");
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_lora_get(m, name.c_str(), out.Data(), out.ElementLength(), err, sizeof err), "lathe_lora_get", err);
    return info.Env().Undefined();
  }

  Napi::Value LoraGrad(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    std::string name = StringArg(info, 0, "name");
    Napi::Float32Array out = Float32Arg(info, 1, "out");
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_lora_grad(m, name.c_str(), out.Data(), out.ElementLength(), err, sizeof err), "lathe_lora_grad", err);
    return info.Env().Undefined();
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_zero_grad(m, err, sizeof err), "lathe_zero_grad", err);
    return info.Env().Undefined();
  }

  // The LATHE_LORA_* bits of info[0], an array of module names (q_proj … lm_head).
  static uint32_t ModuleBits(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsArray()) ThrowArg(info.Env(), "modules must be an array of module names");
    Napi::Array list = info[0].As<Napi::Array>();
    uint32_t modules = 0;
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value item = list.Get(i);
      if (!item.IsString()) ThrowArg(info.Env(), "modules must be an array of module names");
      modules |= ModuleBit(info.Env(), item.As<Napi::String>().Utf8Value(), "modules");
    }
    return modules;
  }

  // convertBf16(modules: string[]): the bf16 base (lathe_model_convert_bf16).
  Napi::Value ConvertBf16(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    const uint32_t modules = ModuleBits(info);
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_convert_bf16(m, modules, err, sizeof err), "lathe_model_convert_bf16", err);
    return info.Env().Undefined();
  }

  Napi::Value QuantizeNf4(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    const uint32_t modules = ModuleBits(info);
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_quantize_nf4(m, modules, err, sizeof err), "lathe_model_quantize_nf4", err);
    return info.Env().Undefined();
  }

  Napi::Value Memory(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    uint64_t bytes = 0, params = 0;
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_memory(m, &bytes, &params, err, sizeof err), "lathe_model_memory", err);
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("baseBytes", Napi::Number::New(info.Env(), static_cast<double>(bytes)));
    out.Set("baseParams", Napi::Number::New(info.Env(), static_cast<double>(params)));
    return out;
  }

  Napi::Value SetGradientCheckpointing(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    if (info.Length() < 1 || !info[0].IsBoolean()) ThrowArg(info.Env(), "enabled must be a boolean");
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_set_gradient_checkpointing(m, info[0].As<Napi::Boolean>().Value() ? 1 : 0, err, sizeof err),
          "lathe_model_set_gradient_checkpointing", err);
    return info.Env().Undefined();
  }

  Napi::Value ActivationBytes(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    uint64_t peak = 0;
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_activation_bytes(m, &peak, err, sizeof err), "lathe_model_activation_bytes", err);
    return Napi::Number::New(info.Env(), static_cast<double>(peak));
  }

  // The backend's name never changes: readable while a call runs.
  Napi::Value Backend(const Napi::CallbackInfo& info) {
    if (model_ == nullptr || free_pending_) ThrowCoded(info.Env(), "FAILED_PRECONDITION", "the model was freed");
    return Napi::String::New(info.Env(), lathe_model_backend(model_));
  }

  // Synchronous (like setWeight): the file is mmapped and converted straight into the weights.
  Napi::Value LoadSafetensors(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    if (info.Length() < 1 || !info[0].IsString()) ThrowArg(info.Env(), "path must be a string");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_model_load_safetensors(m, path.c_str(), err, sizeof err), "lathe_model_load_safetensors", err);
    return info.Env().Undefined();
  }

  // ---- checkpoint state: AdamW moments, step counter, dropout RNG ----------------------------

  Napi::Value AdamwStateGet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    std::string name = StringArg(info, 0, "name");
    Napi::Float32Array mo = Float32Arg(info, 1, "m");
    Napi::Float32Array vo = Float32Arg(info, 2, "v");
    if (mo.ElementLength() != vo.ElementLength()) ThrowArg(info.Env(), "m and v of " + name + " must have the same length");
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_adamw_state_get(m, name.c_str(), mo.Data(), vo.Data(), mo.ElementLength(), err, sizeof err), "lathe_adamw_state_get", err);
    return info.Env().Undefined();
  }

  Napi::Value AdamwStateSet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    std::string name = StringArg(info, 0, "name");
    Napi::Float32Array mi = Float32Arg(info, 1, "m of " + name);
    Napi::Float32Array vi = Float32Arg(info, 2, "v of " + name);
    if (mi.ElementLength() != vi.ElementLength()) ThrowArg(info.Env(), "m and v of " + name + " must have the same length");
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_adamw_state_set(m, name.c_str(), mi.Data(), vi.Data(), mi.ElementLength(), err, sizeof err), "lathe_adamw_state_set", err);
    return info.Env().Undefined();
  }

  Napi::Value AdamwStepCountGet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    int64_t step = 0;
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_adamw_step_count_get(m, &step, err, sizeof err), "lathe_adamw_step_count_get", err);
    return Napi::Number::New(info.Env(), static_cast<double>(step));
  }

  Napi::Value AdamwStepCountSet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowArg(info.Env(), "step must be a number");
    const double x = info[0].As<Napi::Number>().DoubleValue();
    if (!(x >= 0) || x != std::floor(x) || x > 9007199254740991.0) ThrowArg(info.Env(), "step must be a non-negative safe integer");
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_adamw_step_count_set(m, static_cast<int64_t>(x), err, sizeof err), "lathe_adamw_step_count_set", err);
    return info.Env().Undefined();
  }

  // The four xoshiro256** words as a BigUint64Array (64-bit values do not fit a JS number).
  Napi::Value RngStateGet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    uint64_t state[4];
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_rng_state_get(m, state, err, sizeof err), "lathe_rng_state_get", err);
    napi_value array;
    Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(info.Env(), sizeof state);
    std::memcpy(buffer.Data(), state, sizeof state);
    napi_status st = napi_create_typedarray(info.Env(), napi_biguint64_array, 4, buffer, 0, &array);
    if (st != napi_ok) ThrowCoded(info.Env(), "INTERNAL", "could not create a BigUint64Array");
    return Napi::Value(info.Env(), array);
  }

  Napi::Value RngStateSet(const Napi::CallbackInfo& info) {
    lathe_model* m = Ready(info.Env());
    if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
        info[0].As<Napi::TypedArray>().ElementLength() != 4) {
      ThrowArg(info.Env(), "state must be a BigUint64Array of 4 words");
    }
    Napi::TypedArray array = info[0].As<Napi::TypedArray>();
    uint64_t state[4];
    std::memcpy(state, static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset(), sizeof state);
    char err[kErrLen] = {0};
    Check(info.Env(), lathe_rng_state_set(m, state, err, sizeof err), "lathe_rng_state_set", err);
    return info.Env().Undefined();
  }

  Napi::Value ForwardBackward(const Napi::CallbackInfo& info);
  Napi::Value AdamwStep(const Napi::CallbackInfo& info);
  Napi::Value HiddenStates(const Napi::CallbackInfo& info);

  Napi::Value Free(const Napi::CallbackInfo& info) {
    // Freeing under a running worker would pull memory from under it: free when it finishes.
    if (busy_) {
      free_pending_ = true;
    } else {
      Release();
    }
    return info.Env().Undefined();
  }

  lathe_model* model_ = nullptr;
  bool busy_ = false;
  bool free_pending_ = false;

  friend class ModelWorker;
};

// Runs one engine call off the event loop and settles a Promise. Holds a reference to the JS
// Model so that it cannot be collected while the call runs.
class ModelWorker : public Napi::AsyncWorker {
 public:
  ModelWorker(Napi::Env env, Model* model, const Napi::Object& self)
      : Napi::AsyncWorker(env, "lathe_engine"), deferred_(Napi::Promise::Deferred::New(env)), model_(model) {
    self_ = Napi::Persistent(self);
    model_->busy_ = true;
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  virtual lathe_status Run(lathe_model* m, char* err, size_t err_len) = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  virtual const char* Call() const = 0;

  void Execute() override {
    err_[0] = '\0';
    status_ = Run(model_->handle(), err_, sizeof err_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    model_->WorkerDone();
    if (status_ != LATHE_OK) {
      deferred_.Reject(CodedError(env, lathe_status_string(status_), EngineMessage(Call(), err_)).Value());
      return;
    }
    try {
      deferred_.Resolve(Result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override {
    model_->WorkerDone();
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  Model* model_;
  lathe_status status_ = LATHE_OK;
  char err_[kErrLen] = {0};
};

class ForwardBackwardWorker : public ModelWorker {
 public:
  using ModelWorker::ModelWorker;

  std::vector<int32_t> tokens, labels, positions, segments;  // segments empty: one segment per row
  int32_t batch = 0, seq = 0, backward = 0, training = 0;
  float grad_scale = 1.0f;
  std::vector<float> logits;  // empty: not requested
  bool want_logits = false;

 protected:
  lathe_status Run(lathe_model* m, char* err, size_t err_len) override {
    const lathe_status st =
        lathe_forward_backward(m, tokens.data(), labels.data(), positions.data(), segments.empty() ? nullptr : segments.data(), batch,
                               seq, backward, training, grad_scale, &loss_, &label_count_, want_logits ? logits.data() : nullptr, err, err_len);
    if (st != LATHE_OK) return st;
    return lathe_model_last_correct(m, &correct_, err, err_len);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("loss", Napi::Number::New(env, loss_));
    result.Set("labelCount", Napi::Number::New(env, static_cast<double>(label_count_)));
    result.Set("correctCount", Napi::Number::New(env, static_cast<double>(correct_)));
    if (want_logits) {
      Napi::Float32Array out = Napi::Float32Array::New(env, logits.size());
      std::copy(logits.begin(), logits.end(), out.Data());
      result.Set("logits", out);
    } else {
      result.Set("logits", env.Null());
    }
    return result;
  }

  const char* Call() const override { return "lathe_forward_backward"; }

 private:
  float loss_ = 0.0f;
  int64_t label_count_ = 0;
  int64_t correct_ = 0;
};

class AdamwWorker : public ModelWorker {
 public:
  using ModelWorker::ModelWorker;
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, max_grad_norm = 0;

 protected:
  lathe_status Run(lathe_model* m, char* err, size_t err_len) override {
    return lathe_adamw_step(m, lr, beta1, beta2, eps, weight_decay, max_grad_norm, &grad_norm_, err, err_len);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("gradNorm", Napi::Number::New(env, grad_norm_));
    return result;
  }

  const char* Call() const override { return "lathe_adamw_step"; }

 private:
  float grad_norm_ = 0.0f;
};

Napi::Value Model::ForwardBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ready(env);
  Napi::Object args = ObjectArg(info, 0, "batch");
  const char* o = "batch";
  int32_t batch = IntField(args, o, "batch");
  int32_t seq = IntField(args, o, "seq");
  if (batch <= 0 || seq <= 0) ThrowArg(env, "batch.batch and batch.seq must be positive");
  size_t count = static_cast<size_t>(batch) * static_cast<size_t>(seq);
  // Everything is read and copied before the worker exists, so a bad argument leaves the model idle.
  std::vector<int32_t> tokens = Int32Field(args, o, "tokens", count);
  std::vector<int32_t> labels = Int32Field(args, o, "labels", count);
  std::vector<int32_t> positions = Int32Field(args, o, "positions", count);
  std::vector<int32_t> segments;
  if (!args.Get("segments").IsNull()) segments = Int32Field(args, o, "segments", count);
  bool backward = BoolField(args, o, "backward");
  bool training = BoolField(args, o, "training");
  double grad_scale = NumberField(args, o, "gradScale");
  bool want_logits = BoolField(args, o, "wantLogits");
  std::vector<float> logits;
  if (want_logits) {
    int32_t vocab = IntField(args, o, "vocabSize");
    if (vocab <= 0) ThrowArg(env, "batch.vocabSize must be positive when wantLogits is true");
    try {
      logits.resize(count * static_cast<size_t>(vocab));
    } catch (const std::bad_alloc&) {
      ThrowCoded(env, "OUT_OF_MEMORY", "no memory for [" + std::to_string(batch) + ", " + std::to_string(seq) + ", " + std::to_string(vocab) + "] logits");
    }
  }

  auto* worker = new ForwardBackwardWorker(env, this, info.This().As<Napi::Object>());
  worker->tokens = std::move(tokens);
  worker->labels = std::move(labels);
  worker->positions = std::move(positions);
  worker->segments = std::move(segments);
  worker->batch = batch;
  worker->seq = seq;
  worker->backward = backward ? 1 : 0;
  worker->training = training ? 1 : 0;
  worker->grad_scale = static_cast<float>(grad_scale);
  worker->want_logits = want_logits;
  worker->logits = std::move(logits);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value Model::AdamwStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ready(env);
  Napi::Object args = ObjectArg(info, 0, "step");
  const char* o = "step";
  float lr = static_cast<float>(NumberField(args, o, "lr"));
  float beta1 = static_cast<float>(NumberField(args, o, "beta1"));
  float beta2 = static_cast<float>(NumberField(args, o, "beta2"));
  float eps = static_cast<float>(NumberField(args, o, "eps"));
  float weight_decay = static_cast<float>(NumberField(args, o, "weightDecay"));
  float max_grad_norm = static_cast<float>(NumberField(args, o, "maxGradNorm"));
  auto* worker = new AdamwWorker(env, this, info.This().As<Napi::Object>());
  worker->lr = lr;
  worker->beta1 = beta1;
  worker->beta2 = beta2;
  worker->eps = eps;
  worker->weight_decay = weight_decay;
  worker->max_grad_norm = max_grad_norm;
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

class HiddenStatesWorker : public ModelWorker {
 public:
  using ModelWorker::ModelWorker;

  std::vector<int32_t> tokens, lengths;
  int32_t layer = 0;
  std::vector<float> out;  // [sum(lengths), hidden], allocated before the worker runs

 protected:
  lathe_status Run(lathe_model* m, char* err, size_t err_len) override {
    return lathe_hidden_states(m, tokens.data(), lengths.data(), static_cast<int32_t>(lengths.size()), layer, out.data(), out.size(), err,
                               err_len);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Float32Array result = Napi::Float32Array::New(env, out.size());
    std::copy(out.begin(), out.end(), result.Data());
    return result;
  }

  const char* Call() const override { return "lathe_hidden_states"; }
};

// hiddenStates({ tokens, lengths, layer, hiddenSize }) -> Promise<Float32Array> of [sum(lengths), hiddenSize].
Napi::Value Model::HiddenStates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Ready(env);
  Napi::Object args = ObjectArg(info, 0, "hiddenStates");
  const char* o = "hiddenStates";
  std::vector<int32_t> lengths = Int32Values(args, o, "lengths");
  std::vector<int32_t> tokens = Int32Values(args, o, "tokens");
  const int32_t layer = IntField(args, o, "layer");
  const int32_t hidden = IntField(args, o, "hiddenSize");
  if (lengths.empty() || lengths.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    ThrowArg(env, "hiddenStates.lengths must hold between 1 and 2^31-1 sequence lengths");
  }
  if (hidden <= 0) ThrowArg(env, "hiddenStates.hiddenSize must be positive");
  // The engine checks each length (> 0, naming the sequence); here only that tokens holds them all.
  int64_t total = 0;
  for (int32_t n : lengths) total += n;
  if (total != static_cast<int64_t>(tokens.size())) {
    ThrowArg(env, "hiddenStates.tokens has " + std::to_string(tokens.size()) + " elements, expected the sum of lengths = " + std::to_string(total));
  }
  std::vector<float> out;
  try {
    out.resize(tokens.size() * static_cast<size_t>(hidden));
  } catch (const std::bad_alloc&) {
    ThrowCoded(env, "OUT_OF_MEMORY", "no memory for [" + std::to_string(tokens.size()) + ", " + std::to_string(hidden) + "] hidden states");
  }

  auto* worker = new HiddenStatesWorker(env, this, info.This().As<Napi::Object>());
  worker->tokens = std::move(tokens);
  worker->lengths = std::move(lengths);
  worker->layer = layer;
  worker->out = std::move(out);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// ---- LoRA merge: no model, one worker per call ---------------------------------------------

// Runs lathe_lora_merge off the event loop. The weight is large (a vocabulary-sized lm_head can
// take gigabytes), so it is not copied: the worker writes into the caller's Float32Array, kept
// alive by a reference until the Promise settles; the caller must leave the three arrays alone
// until then (ts/index.ts's loraMerge does).
class LoraMergeWorker : public Napi::AsyncWorker {
 public:
  LoraMergeWorker(Napi::Env env, Napi::Float32Array weight, Napi::Float32Array a, Napi::Float32Array b)
      : Napi::AsyncWorker(env, "lathe_engine"), deferred_(Napi::Promise::Deferred::New(env)), w_(weight.Data()), a_(a.Data()), b_(b.Data()) {
    arrays_[0] = Napi::Persistent(static_cast<Napi::Object>(weight));
    arrays_[1] = Napi::Persistent(static_cast<Napi::Object>(a));
    arrays_[2] = Napi::Persistent(static_cast<Napi::Object>(b));
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

  std::string name;
  int64_t rows = 0, cols = 0;
  int32_t r = 0, num_threads = 0;
  double scale = 0;

 protected:
  void Execute() override {
    err_[0] = '\0';
    status_ = lathe_lora_merge(w_, a_, b_, rows, cols, r, scale, num_threads, err_, sizeof err_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (status_ != LATHE_OK) {
      deferred_.Reject(CodedError(env, lathe_status_string(status_), name + ": " + EngineMessage("lathe_lora_merge", err_)).Value());
      return;
    }
    deferred_.Resolve(env.Undefined());
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference arrays_[3];
  float* w_;
  const float* a_;
  const float* b_;
  lathe_status status_ = LATHE_OK;
  char err_[kErrLen] = {0};
};

// loraMerge({ name, weight, a, b, rows, cols, r, scale, numThreads }) -> Promise<void>: weight += scale * b a, in place.
Napi::Value LoraMerge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object args = ObjectArg(info, 0, "merge");
  const char* o = "merge";
  Napi::Value nameValue = args.Get("name");
  if (!nameValue.IsString()) ThrowArg(env, "merge.name must be a string");
  const std::string name = nameValue.As<Napi::String>().Utf8Value();
  const double rows = NumberField(args, o, "rows"), cols = NumberField(args, o, "cols");
  const int32_t r = IntField(args, o, "r");
  const double scale = NumberField(args, o, "scale");
  const int32_t num_threads = IntField(args, o, "numThreads");
  for (double x : {rows, cols}) {
    if (!(x >= 1) || x != std::floor(x) || x > 9007199254740991.0) ThrowArg(env, name + ": merge.rows and merge.cols must be positive safe integers");
  }
  if (r <= 0) ThrowArg(env, name + ": merge.r must be positive, got " + std::to_string(r));
  // The lengths are what the bare pointers of lathe_lora_merge rely on: check them here.
  auto array = [&](const char* key, double expected, const char* shape) {
    Napi::Value value = args.Get(key);
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      ThrowArg(env, name + ": merge." + key + " must be a Float32Array");
    }
    Napi::Float32Array data = value.As<Napi::Float32Array>();
    if (static_cast<double>(data.ElementLength()) != expected) {
      ThrowArg(env, name + ": merge." + key + " has " + std::to_string(data.ElementLength()) + " elements, expected " + shape + " = " +
                        std::to_string(static_cast<int64_t>(expected)));
    }
    return data;
  };
  Napi::Float32Array weight = array("weight", rows * cols, "rows*cols");
  Napi::Float32Array a = array("a", static_cast<double>(r) * cols, "r*cols");
  Napi::Float32Array b = array("b", rows * r, "rows*r");
  auto overlaps = [](const Napi::Float32Array& x, const Napi::Float32Array& y) {
    const float *x0 = x.Data(), *y0 = y.Data();
    return x0 < y0 + y.ElementLength() && y0 < x0 + x.ElementLength();
  };
  if (overlaps(weight, a) || overlaps(weight, b)) ThrowArg(env, name + ": merge.weight must not share memory with merge.a or merge.b");

  auto* worker = new LoraMergeWorker(env, weight, a, b);
  worker->name = name;
  worker->rows = static_cast<int64_t>(rows);
  worker->cols = static_cast<int64_t>(cols);
  worker->r = r;
  worker->scale = scale;
  worker->num_threads = num_threads;
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// nf4Roundtrip(values: Float32Array) -> { values: Float32Array, codes: Uint8Array } (tests).
Napi::Value Nf4Roundtrip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Float32Array in = Float32Arg(info, 0, "values");
  const size_t n = in.ElementLength();
  Napi::Float32Array values = Napi::Float32Array::New(env, n);
  Napi::Uint8Array codes = Napi::Uint8Array::New(env, (n + 1) / 2);
  char err[kErrLen] = {0};
  Check(env, lathe_nf4_roundtrip(in.Data(), n, values.Data(), codes.Data(), err, sizeof err), "lathe_nf4_roundtrip", err);
  Napi::Object out = Napi::Object::New(env);
  out.Set("values", values);
  out.Set("codes", codes);
  return out;
}

// cpuInfo({ threads, seconds }) -> { gemmKernel, fmaPeakGflops } (benchmarks; runs on the caller's thread).
Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "cpuInfo: expected { threads, seconds }").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  const int32_t threads = o.Get("threads").ToNumber().Int32Value();
  const double seconds = o.Get("seconds").ToNumber().DoubleValue();
  double gflops = 0.0;
  char err[kErrLen] = {0};
  Check(env, lathe_cpu_fma_peak(threads, seconds, &gflops, err, sizeof err), "lathe_cpu_fma_peak", err);
  Napi::Object out = Napi::Object::New(env);
  out.Set("gemmKernel", Napi::String::New(env, lathe_cpu_gemm_kernel()));
  out.Set("fmaPeakGflops", Napi::Number::New(env, gflops));
  return out;
}

// backends() -> string[]: lathe_backend_name's list ("cpu" first, then the device backends usable here).
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  for (int32_t i = 0; const char* name = lathe_backend_name(i); ++i) out.Set(static_cast<uint32_t>(i), Napi::String::New(info.Env(), name));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Model", Model::Define(env));
  exports.Set("nf4Roundtrip", Napi::Function::New<Nf4Roundtrip>(env, "nf4Roundtrip"));
  exports.Set("loraMerge", Napi::Function::New<LoraMerge>(env, "loraMerge"));
  exports.Set("cpuInfo", Napi::Function::New<CpuInfo>(env, "cpuInfo"));
  exports.Set("backends", Napi::Function::New<Backends>(env, "backends"));
  return exports;
}

}  // namespace

NODE_API_MODULE(lathe_engine_node, Init)
