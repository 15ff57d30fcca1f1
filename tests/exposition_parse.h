// tests/exposition_parse.h: reads a Prometheus text exposition back for the
// tests: the families' HELP and TYPE, and every sample by its series (name
// with its label text exactly as written).
//
// Thread-compatible: free functions.
#ifndef KMCLD_TESTS_EXPOSITION_PARSE_H_
#define KMCLD_TESTS_EXPOSITION_PARSE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kmcld::testing {

struct ParsedExposition {
  std::map<std::string, std::string> help, type;  // by family name
  std::vector<std::string> family_order;          // as declared
  std::vector<std::string> series_order;          // "name{labels}", as written
  std::map<std::string, double> samples;          // by "name{labels}"
};

// INVALID_ARGUMENT naming the line when a sample comes before its family's
// HELP and TYPE, a family is declared twice or a sample is not a number.
absl::StatusOr<ParsedExposition> ParseExposition(const std::string& text);

// GET http://address/metrics (cpp-httplib's client).
absl::StatusOr<std::string> Scrape(const std::string& address);

}  // namespace kmcld::testing

#endif  // KMCLD_TESTS_EXPOSITION_PARSE_H_
