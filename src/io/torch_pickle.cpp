#include "io/torch_pickle.hpp"

#include <cstring>
#include <set>
#include <unordered_map>

#include "baq/error.hpp"

namespace baq {

namespace {

// What a value on the interpreter's stack can be. Objects live in one arena and refer to each other
// by index, so a self-referencing list (legal in a pickle) cannot leak or recurse.
enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "a bool";
    case Kind::Int: return "an int";
    case Kind::Float: return "a float";
    case Kind::Str: return "a str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "a tuple";
    case Kind::List: return "a list";
    case Kind::Dict: return "a dict";
    case Kind::Global: return "a global";
    case Kind::Storage: return "a storage";
    case Kind::Tensor: return "a tensor";
  }
  return "?";
}

enum class Callable { OrderedDict, RebuildTensorV2, StorageType };

struct Object {
  Kind kind = Kind::None;
  Callable callable = Callable::OrderedDict;
  int depth = 0;
  int64_t integer = 0;  // Int, Bool; the index in `records_` for Storage and Tensor
  std::string text;     // Str, Bytes; the storage type name for Global(StorageType)
  std::vector<uint32_t> items;  // Tuple/List elements; Dict keys and values interleaved
};

// Far above any real state dict (a 70B checkpoint's pickle makes ~20 objects per tensor, ~15k in
// all) and low enough that a hostile pickle cannot make us allocate more than a few hundred MB.
constexpr size_t kMaxObjects = size_t{1} << 22;

const std::set<std::string>& storage_types() {
  static const std::set<std::string> types = {"FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage",
                                              "LongStorage",  "IntStorage",  "ShortStorage",    "CharStorage",
                                              "ByteStorage",  "BoolStorage"};
  return types;
}

class Unpickler {
 public:
  Unpickler(std::string_view bytes, const std::string& source) : in_(bytes), source_(source) {}

  std::vector<TorchTensorRecord> run();

 private:
  std::string_view in_;
  const std::string& source_;
  size_t pos_ = 0;
  size_t op_at_ = 0;
  std::vector<Object> arena_;
  std::vector<uint32_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, uint32_t> memo_;
  std::vector<TorchTensorRecord> records_;  // storages and tensors built so far

  template <class... Args>
  [[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) const {
    fail("{}: {} (pickle byte {})", source_, fmt::format(f, std::forward<Args>(args)...), op_at_);
  }

  std::string_view take(uint64_t n) {
    if (n > in_.size() - pos_) bad("truncated pickle: needs {} more bytes, {} left", n, in_.size() - pos_);
    auto s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  template <class T>
  T little() {
    T v;
    std::memcpy(&v, take(sizeof(T)).data(), sizeof(T));
    return v;
  }
  std::string line() {
    const size_t end = in_.find('\n', pos_);
    if (end == std::string_view::npos) bad("truncated pickle: a GLOBAL name has no line end");
    std::string s(in_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  uint32_t make(Object o) {
    if (o.depth > kMaxPickleDepth) bad("pickle nests deeper than {} levels", kMaxPickleDepth);
    if (arena_.size() >= kMaxObjects) bad("pickle builds more than {} objects", kMaxObjects);
    arena_.push_back(std::move(o));
    return static_cast<uint32_t>(arena_.size() - 1);
  }
  uint32_t make_scalar(Kind k, int64_t v = 0) {
    Object o;
    o.kind = k;
    o.integer = v;
    return make(std::move(o));
  }
  void push(uint32_t id) { stack_.push_back(id); }
  uint32_t pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) bad("pickle pops from an empty stack");
    const uint32_t v = stack_.back();
    stack_.pop_back();
    return v;
  }
  uint32_t top() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) bad("pickle reads an empty stack");
    return stack_.back();
  }
  std::vector<uint32_t> pop_to_mark() {
    if (marks_.empty()) bad("pickle uses a mark it never set");
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  uint32_t container(Kind kind, std::vector<uint32_t> items) {
    Object o;
    o.kind = kind;
    for (uint32_t i : items) o.depth = std::max(o.depth, arena_[i].depth + 1);
    o.items = std::move(items);
    return make(std::move(o));
  }
  // Adds items to a list or dict already built; its depth grows with them.
  void extend(uint32_t target, const std::vector<uint32_t>& items, Kind expected) {
    Object& t = arena_[target];
    if (t.kind != expected) bad("pickle adds items to {}, not {}", kind_name(t.kind), kind_name(expected));
    if (expected == Kind::Dict && items.size() % 2 != 0) bad("pickle sets a key without a value");
    int depth = t.depth;
    for (uint32_t i : items) depth = std::max(depth, arena_[i].depth + 1);
    if (depth > kMaxPickleDepth) bad("pickle nests deeper than {} levels", kMaxPickleDepth);
    t.depth = depth;
    t.items.insert(t.items.end(), items.begin(), items.end());
  }
  void memo_put(uint64_t key) {
    if (memo_.size() >= kMaxObjects && !memo_.count(key)) bad("pickle memo exceeds {} entries", kMaxObjects);
    memo_[key] = top();
  }
  void memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) bad("pickle reads memo slot {} that was never written", key);
    push(it->second);
  }

  uint32_t global(const std::string& module, const std::string& name);
  uint32_t reduce(uint32_t callable, uint32_t args);
  uint32_t persistent_storage(uint32_t pid);
  int64_t as_int(uint32_t id, const char* what) {
    if (arena_[id].kind != Kind::Int) bad("{} is {}, not an int", what, kind_name(arena_[id].kind));
    return arena_[id].integer;
  }
  std::vector<int64_t> int_tuple(uint32_t id, const char* what) {
    const Object& o = arena_[id];
    if (o.kind != Kind::Tuple) bad("{} is {}, not a tuple", what, kind_name(o.kind));
    std::vector<int64_t> v;
    for (uint32_t i : o.items) v.push_back(as_int(i, what));
    return v;
  }
};

uint32_t Unpickler::global(const std::string& module, const std::string& name) {
  Object o;
  o.kind = Kind::Global;
  if (module == "collections" && name == "OrderedDict") {
    o.callable = Callable::OrderedDict;
  } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    o.callable = Callable::RebuildTensorV2;
  } else if (module == "torch" && storage_types().count(name)) {
    o.callable = Callable::StorageType;
    o.text = name;
  } else {
    bad("refuses global '{}.{}': a tensor state dict needs only collections.OrderedDict, "
        "torch._utils._rebuild_tensor_v2 and torch storage types, and baq never runs code from a checkpoint",
        module, name);
  }
  return make(std::move(o));
}

uint32_t Unpickler::persistent_storage(uint32_t pid) {
  // torch.save's persistent id: ('storage', torch.<Type>Storage, key, location, numel).
  const Object& t = arena_[pid];
  if (t.kind != Kind::Tuple || t.items.size() != 5) bad("persistent id is not a 5-tuple ('storage', type, key, location, numel)");
  const Object& tag = arena_[t.items[0]];
  const Object& type = arena_[t.items[1]];
  const Object& key = arena_[t.items[2]];
  const Object& location = arena_[t.items[3]];
  if (tag.kind != Kind::Str || tag.text != "storage") bad("persistent id is not a 'storage' reference");
  if (type.kind != Kind::Global || type.callable != Callable::StorageType) bad("persistent id names no torch storage type");
  if (key.kind != Kind::Str || key.text.empty() || key.text.size() > 64 ||
      key.text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != std::string::npos)
    bad("storage key must be a short alphanumeric name");
  if (location.kind != Kind::Str) bad("storage location is {}, not a str", kind_name(location.kind));
  const int64_t numel = as_int(t.items[4], "storage size");
  if (numel < 0 || numel > (int64_t{1} << 48)) bad("storage size {} is out of range", numel);
  TorchTensorRecord r;
  r.storage_type = type.text;
  r.storage_key = key.text;
  r.storage_numel = numel;
  Object o;
  o.kind = Kind::Storage;
  o.integer = static_cast<int64_t>(records_.size());
  records_.push_back(std::move(r));
  return make(std::move(o));
}

uint32_t Unpickler::reduce(uint32_t callable, uint32_t args_id) {
  const Object& f = arena_[callable];
  const Object& args = arena_[args_id];
  if (f.kind != Kind::Global) bad("pickle calls {}, which is not a permitted global", kind_name(f.kind));
  if (args.kind != Kind::Tuple) bad("pickle calls a global with {} as arguments", kind_name(args.kind));
  switch (f.callable) {
    case Callable::OrderedDict:
      if (!args.items.empty()) bad("OrderedDict is called with arguments; state dicts build it empty");
      return container(Kind::Dict, {});
    case Callable::StorageType:
      bad("pickle calls torch.{} directly; storages come only from persistent ids", f.text);
    case Callable::RebuildTensorV2: {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (args.items.size() != 6 && args.items.size() != 7) bad("_rebuild_tensor_v2 takes 6 or 7 arguments, not {}", args.items.size());
      const std::vector<uint32_t> a = args.items;
      if (arena_[a[0]].kind != Kind::Storage) bad("_rebuild_tensor_v2's storage is {}", kind_name(arena_[a[0]].kind));
      TorchTensorRecord r = records_[static_cast<size_t>(arena_[a[0]].integer)];
      r.offset = as_int(a[1], "storage offset");
      r.shape = int_tuple(a[2], "tensor size");
      r.stride = int_tuple(a[3], "tensor stride");
      if (arena_[a[4]].kind != Kind::Bool) bad("requires_grad is {}, not a bool", kind_name(arena_[a[4]].kind));
      if (arena_[a[5]].kind != Kind::Dict || !arena_[a[5]].items.empty()) bad("a tensor carries backward hooks");
      if (r.shape.size() != r.stride.size()) bad("tensor size has {} dims but stride {}", r.shape.size(), r.stride.size());
      if (r.offset < 0) bad("negative storage offset {}", r.offset);
      // The last element addressed must lie inside the storage; bounds keep every product in range.
      int64_t last = r.offset, numel = 1;
      for (size_t d = 0; d < r.shape.size(); ++d) {
        if (r.shape[d] < 0 || r.shape[d] > (int64_t{1} << 48) || r.stride[d] < 0 || r.stride[d] > (int64_t{1} << 48))
          bad("tensor dim {} has size {} and stride {}", d, r.shape[d], r.stride[d]);
        numel = r.shape[d] == 0 ? 0 : numel;
        if (numel != 0 && r.shape[d] > (int64_t{1} << 48) / numel) bad("tensor size overflows");
        numel *= r.shape[d];
        if (r.shape[d] > 0) {
          if (r.stride[d] != 0 && r.shape[d] - 1 > ((int64_t{1} << 50) - last) / r.stride[d]) bad("tensor extent overflows");
          last += (r.shape[d] - 1) * r.stride[d];
        }
      }
      if (numel > 0 && last >= r.storage_numel)
        bad("tensor reaches element {} of a {}-element storage '{}'", last, r.storage_numel, r.storage_key);
      Object o;
      o.kind = Kind::Tensor;
      o.integer = static_cast<int64_t>(records_.size());
      records_.push_back(std::move(r));
      return make(std::move(o));
    }
  }
  bad("unreachable");
}

std::vector<TorchTensorRecord> Unpickler::run() {
  for (;;) {
    op_at_ = pos_;
    const auto op = static_cast<uint8_t>(take(1)[0]);
    switch (op) {
      case 0x80: {  // PROTO
        const auto v = little<uint8_t>();
        if (v > 5) bad("pickle protocol {} is newer than 5", v);
        break;
      }
      case 0x95: take(8); break;  // FRAME: a length hint only
      case '.': {                 // STOP
        const uint32_t result = pop();
        const Object& d = arena_[result];
        if (d.kind != Kind::Dict) bad("the pickle holds {}, not a state dict", kind_name(d.kind));
        std::vector<TorchTensorRecord> out;
        std::set<std::string> names;
        for (size_t i = 0; i < d.items.size(); i += 2) {
          const Object& k = arena_[d.items[i]];
          const Object& v = arena_[d.items[i + 1]];
          if (k.kind != Kind::Str) bad("state dict key is {}, not a str", kind_name(k.kind));
          if (v.kind != Kind::Tensor) bad("state dict entry '{}' is {}, not a tensor", k.text, kind_name(v.kind));
          if (!names.insert(k.text).second) bad("state dict names '{}' twice", k.text);
          out.push_back(records_[static_cast<size_t>(v.integer)]);
          out.back().name = k.text;
        }
        return out;
      }
      case '(':  // MARK
        if (marks_.size() >= static_cast<size_t>(kMaxPickleDepth)) bad("pickle nests marks deeper than {} levels", kMaxPickleDepth);
        marks_.push_back(stack_.size());
        break;
      case '}': push(container(Kind::Dict, {})); break;
      case ']': push(container(Kind::List, {})); break;
      case ')': push(container(Kind::Tuple, {})); break;
      case 't': push(container(Kind::Tuple, pop_to_mark())); break;
      case 'l': push(container(Kind::List, pop_to_mark())); break;
      case 'd': {
        auto items = pop_to_mark();
        if (items.size() % 2 != 0) bad("DICT with a key and no value");
        push(container(Kind::Dict, std::move(items)));
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        std::vector<uint32_t> items(op - 0x84);
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        push(container(Kind::Tuple, std::move(items)));
        break;
      }
      case 'a': {  // APPEND
        const uint32_t v = pop();
        extend(top(), {v}, Kind::List);
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_to_mark();
        extend(top(), items, Kind::List);
        break;
      }
      case 's': {  // SETITEM
        const uint32_t v = pop(), k = pop();
        extend(top(), {k, v}, Kind::Dict);
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_to_mark();
        extend(top(), items, Kind::Dict);
        break;
      }
      case 'q': memo_put(little<uint8_t>()); break;          // BINPUT
      case 'r': memo_put(little<uint32_t>()); break;         // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;              // MEMOIZE
      case 'h': memo_get(little<uint8_t>()); break;          // BINGET
      case 'j': memo_get(little<uint32_t>()); break;         // LONG_BINGET
      case 'J': push(make_scalar(Kind::Int, little<int32_t>())); break;
      case 'K': push(make_scalar(Kind::Int, little<uint8_t>())); break;
      case 'M': push(make_scalar(Kind::Int, little<uint16_t>())); break;
      case 0x8a: {  // LONG1: little-endian two's complement of n <= 8 bytes
        const auto n = little<uint8_t>();
        if (n > 8) bad("integer of {} bytes is too large", n);
        const auto b = take(n);
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v |= uint64_t{static_cast<uint8_t>(b[i])} << (8 * i);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
        push(make_scalar(Kind::Int, static_cast<int64_t>(v)));
        break;
      }
      case 'N': push(make_scalar(Kind::None)); break;
      case 0x88: push(make_scalar(Kind::Bool, 1)); break;
      case 0x89: push(make_scalar(Kind::Bool, 0)); break;
      case 'G': take(8); push(make_scalar(Kind::Float)); break;  // BINFLOAT: the value is never needed
      case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': case 0x8e: {
        const uint64_t n = (op == 0x8c || op == 'U' || op == 'C') ? little<uint8_t>()
                           : (op == 0x8d || op == 0x8e)           ? little<uint64_t>()
                                                                  : little<uint32_t>();
        Object o;
        o.kind = (op == 'B' || op == 'C' || op == 0x8e) ? Kind::Bytes : Kind::Str;
        o.text = std::string(take(n));
        push(make(std::move(o)));
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        const std::string module = line();
        const std::string name = line();
        push(global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop(), module = pop();
        if (arena_[name].kind != Kind::Str || arena_[module].kind != Kind::Str) bad("STACK_GLOBAL needs two strings");
        push(global(arena_[module].text, arena_[name].text));
        break;
      }
      case 'R': {  // REDUCE
        const uint32_t args = pop(), f = pop();
        push(reduce(f, args));
        break;
      }
      case 'b': {  // BUILD: only an OrderedDict's attributes (torch's `_metadata`), which we ignore
        const uint32_t state = pop();
        const Kind target = arena_[top()].kind, s = arena_[state].kind;
        if (target != Kind::Dict || (s != Kind::Dict && s != Kind::None && s != Kind::Tuple))
          bad("BUILD on {} with {} is not part of a state dict", kind_name(target), kind_name(s));
        break;
      }
      case 'Q': push(persistent_storage(pop())); break;  // BINPERSID
      case '0': pop(); break;                            // POP
      case '1': pop_to_mark(); break;                    // POP_MARK
      case '2': push(top()); break;                      // DUP
      case 'i': case 'o': case 0x81: case 0x92:
        bad("opcode '{}' builds arbitrary objects and is refused", op == 'i' ? "INST" : op == 'o' ? "OBJ" : op == 0x81 ? "NEWOBJ" : "NEWOBJ_EX");
      case 0x82: case 0x83: case 0x84:
        bad("extension-registry opcode 0x{:02x} is refused (it names globals indirectly)", op);
      case 'P':
        bad("text persistent ids (PERSID) are refused; torch.save writes binary ones");
      default:
        bad("unsupported pickle opcode 0x{:02x}", op);
    }
    if (stack_.size() > kMaxObjects) bad("pickle stack exceeds {} entries", kMaxObjects);
  }
}

}  // namespace

int torch_storage_element_size(const std::string& t) {
  if (t == "DoubleStorage" || t == "LongStorage") return 8;
  if (t == "FloatStorage" || t == "IntStorage") return 4;
  if (t == "HalfStorage" || t == "BFloat16Storage" || t == "ShortStorage") return 2;
  return 1;
}

std::vector<TorchTensorRecord> read_torch_state_dict_pickle(std::string_view pickle, const std::string& source) {
  return Unpickler(pickle, source).run();
}

}  // namespace baq
