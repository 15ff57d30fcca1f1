// kmclctl top: a live view of every target's channels (ncurses), or one
// frame on stdout with --once.
#include <unistd.h>

#include <iostream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "clients/cpp/kmclctl/commands.h"
#include "clients/cpp/kmclctl/top_model.h"

// Last: its macros (timeout, erase, refresh, ...) would rewrite the headers above.
#include <curses.h>

namespace kmclctl {
namespace {

struct TopFlags {
  bool once = false;
  double interval_s = 1;
  std::string sort = "traffic";
};

// The targets' clients, connected once; a target that failed to connect
// is tried again at every round.
class Sampler {
 public:
  explicit Sampler(const Cli& cli) : cli_(cli), clients_(cli.targets.size()) {}

  // One round across every target, concurrently.
  std::vector<TopSample> Round() {
    std::vector<TopSample> out(cli_.targets.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < out.size(); ++i) {
      threads.emplace_back([this, i, &out] {
        TopSample& s = out[i];
        s.target = cli_.targets[i].address;
        if (clients_[i] == nullptr) {
          auto c = ConnectTo(cli_, cli_.targets[i]);
          if (!c.ok()) {
            s.channels = c.status();
            s.time = absl::Now();
            return;
          }
          clients_[i] = *c;
        }
        s.channels = clients_[i]->ListChannelDiagnostics("");
        s.time = absl::Now();
      });
    }
    for (std::thread& t : threads) t.join();
    return out;
  }

 private:
  const Cli& cli_;
  std::vector<std::shared_ptr<kc::Client>> clients_;
};

std::vector<std::string> Errors(const std::vector<TopSample>& samples) {
  std::vector<std::string> out;
  for (const TopSample& s : samples) {
    if (!s.channels.ok()) out.push_back(absl::StrCat(s.target, ": ", s.channels.status().message()));
  }
  return out;
}

absl::Duration Window(const std::vector<TopSample>& before, const std::vector<TopSample>& after) {
  return before.empty() ? absl::ZeroDuration() : after.front().time - before.front().time;
}

int Once(const Cli& cli, const TopFlags& f, TopSort sort) {
  Sampler sampler(cli);
  std::vector<TopSample> before = sampler.Round();
  std::cerr << "kmclctl: top: first sample taken; the frame follows in " << f.interval_s << " s"
            << std::endl;
  absl::SleepFor(absl::Seconds(f.interval_s));  // the rate window itself
  std::vector<TopSample> after = sampler.Round();
  std::vector<std::string> errors = Errors(after);
  std::cout << TopFrame(TopRows(before, after, sort), errors, sort, Window(before, after));
  for (const std::string& e : errors) std::cerr << "kmclctl: " << e << "\n";
  return errors.empty() ? kExitOk : kExitTargetFailed;
}

int Live(const Cli& cli, const TopFlags& f, TopSort sort) {
  if (!::isatty(STDOUT_FILENO)) return UsageError("top: stdout is not a terminal (use --once)");
  Sampler sampler(cli);
  std::vector<TopSample> before = sampler.Round();
  initscr();
  cbreak();
  noecho();
  curs_set(0);
  keypad(stdscr, TRUE);
  bool quit = false;
  absl::Time next = absl::Now() + absl::Seconds(f.interval_s);
  std::vector<TopSample> after = before;
  auto draw = [&] {
    const std::string frame = TopFrame(TopRows(before, after, sort), Errors(after), sort, Window(before, after));
    erase();
    int y = 0;
    for (absl::string_view line : absl::StrSplit(frame, '\n')) {
      if (y >= LINES) break;
      mvaddnstr(y++, 0, line.data(), static_cast<int>(std::min<size_t>(line.size(), COLS)));
    }
    refresh();
  };
  draw();
  while (!quit) {
    // Keys until the next round is due.
    timeout(static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(next - absl::Now()))));
    const int key = getch();
    switch (key) {
      case 'q':
      case 'Q':
        quit = true;
        continue;
      case 's':
        sort = NextTopSort(sort);
        break;
      case 't':
        sort = TopSort::kTraffic;
        break;
      case 'r':
        sort = TopSort::kRing;
        break;
      case 'o':
        sort = TopSort::kOutstanding;
        break;
      case 'n':
        sort = TopSort::kName;
        break;
      default:
        break;
    }
    if (absl::Now() >= next) {
      before = std::move(after);
      after = sampler.Round();
      next = absl::Now() + absl::Seconds(f.interval_s);
    }
    draw();
  }
  endwin();
  return kExitOk;
}

}  // namespace

void RegisterTopCommand(CLI::App& app, Cli& cli) {
  auto f = std::make_shared<TopFlags>();
  CLI::App* top = AddCommand(app, "top",
                             "Live view of every target's channels: rates both ways, ring fill, "
                             "outstanding transactions (keys: s/t/r/o/n sort, q quit)");
  top->add_flag("--once", f->once, "print one frame (rates over one interval) on stdout and exit");
  top->add_option("--interval", f->interval_s, "seconds between refreshes (the rate window)")
      ->check(CLI::Range(0.001, 86400.0));  // as --timeout: a day at most, and a short message
  top->add_option("--sort", f->sort, "traffic (default), ring, outstanding or name")
      ->check(CLI::IsMember({"traffic", "ring", "outstanding", "name"}));
  top->callback([&cli, f] {
    cli.action = [&cli, f] {
      const TopSort sort = *ParseTopSort(f->sort);  // checked by CLI11
      return f->once ? Once(cli, *f, sort) : Live(cli, *f, sort);
    };
  });
}

}  // namespace kmclctl
