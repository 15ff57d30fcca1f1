#include "clients/cpp/kmclctl/struct_access.h"

#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace kmclctl {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

const FieldDescriptor* FieldsField() {
  return google::protobuf::Struct::descriptor()->FindFieldByName("fields");
}

}  // namespace

std::vector<std::pair<std::string, const google::protobuf::Value*>> StructFields(
    const google::protobuf::Struct& s) {
  std::vector<std::pair<std::string, const google::protobuf::Value*>> out;
  const FieldDescriptor* fields = FieldsField();
  const auto* reflection = s.GetReflection();
  const int n = reflection->FieldSize(s, fields);
  for (int i = 0; i < n; ++i) {
    const Message& entry = reflection->GetRepeatedMessage(s, fields, i);
    const auto* d = entry.GetDescriptor();
    const auto* r = entry.GetReflection();
    const Message& value = r->GetMessage(entry, d->FindFieldByNumber(2));
    out.emplace_back(r->GetString(entry, d->FindFieldByNumber(1)),
                     static_cast<const google::protobuf::Value*>(&value));
  }
  return out;
}

void AddStructField(google::protobuf::Struct* s, const std::string& key,
                    const google::protobuf::Value& value) {
  const FieldDescriptor* fields = FieldsField();
  Message* entry = s->GetReflection()->AddMessage(s, fields);
  const auto* d = entry->GetDescriptor();
  const auto* r = entry->GetReflection();
  r->SetString(entry, d->FindFieldByNumber(1), key);
  r->MutableMessage(entry, d->FindFieldByNumber(2))->CopyFrom(value);
}

}  // namespace kmclctl
