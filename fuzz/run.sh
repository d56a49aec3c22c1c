#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20), starting from seeds taken from the committed
# version-1 repository. Works on the stable toolchain through RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/store/fuzz-target}"
fixture=tests/fixtures/v1/repo
z7='\x00\x00\x00\x00\x00\x00\x00'
seeds=fuzz/seeds
mkdir -p "$seeds"/{pack,pack_footer,blob_header,index_file,tree,manifest,config,lock,chunker,damage_file,coverage_file,key_file,sealed}
for p in "$fixture"/packs/*/*.pack; do
  cp "$p" "$seeds/pack/"
  tail -c 64 "$p" > "$seeds/pack_footer/$(basename "$p")"
  head -c 48 "$p" > "$seeds/blob_header/$(basename "$p")"
  head -c 4096 "$p" > "$seeds/chunker/$(basename "$p")"
done
cp "$fixture"/index/* "$seeds/index_file/"
cp "$fixture"/snapshots/* "$seeds/manifest/"
cp "$fixture"/config "$seeds/config/"
printf 'STORELCK\001\000\000\000\000\000\000\000\002\000\000\000\000\000\000\000h1\007\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$seeds/lock/seed"
printf '\000\000\000\000\000\000\000\000\000\000\000\000' > "$seeds/tree/empty-leaf"
# A version-2 leaf: the symlink "a" -> "t" with the attribute user.k = "v" (FORMAT.md §1).
{ printf '\x02\x00\x00\x00\x01%b\x01%ba' "$z7" "$z7"
  printf '\xa4\x81\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00'
  printf '\x01%b\x03\x00\x00\x00\x00%b\x04\x00\x00\x00' "$z7" "$z7"
  printf '\x05%b\x06%b\x01%b\x01%b\x06%buser.k\x01%bv' "$z7" "$z7" "$z7" "$z7" "$z7" "$z7"
  printf '\x02\x00\x00\x00\x01%bt' "$z7"; } > "$seeds/tree/v2-leaf"
# A damage record naming one copy (pack id, blob id, offset 48).
{ printf 'STOREDMG\001\000\000\000\001\000\000\000'; head -c 64 /dev/zero | tr '\000' '\252'; printf '\060\000\000\000\000\000\000\000'; } > "$seeds/damage_file/one-copy"
# A verification record naming one pack, verified at 1,700,000,000 s.
{ printf 'STOREVFY\001\000\000\000\001\000\000\000'; head -c 32 /dev/zero | tr '\000' '\252'; printf '\000\361\123\145\000\000\000\000'; } > "$seeds/coverage_file/one-pack"
# A key file (FORMAT.md §15.2): Argon2id at the least cost, random salt and sealed secret.
{ printf 'STOREKEY\003\000\000\000\001\000\000\000\000\040\000\000\001\000\000\000\001\000\000\000'
  head -c 112 /dev/urandom; } > "$seeds/key_file/seed"
# Sealed objects: a manifest envelope (kind 2) and a sealed blob (5), both with random contents.
{ printf '\002STOREENC\003\000\000\000\002\000\000\000'; head -c 100 /dev/urandom; } > "$seeds/sealed/manifest"
{ printf '\005'; head -c 140 /dev/urandom; } > "$seeds/sealed/blob"
log="$(mktemp)"
for target in pack pack_footer blob_header index_file tree manifest config lock chunker damage_file coverage_file key_file sealed; do
  mkdir -p "fuzz/corpus/$target" "fuzz/regressions/$target"
  # Crashers found earlier stay in fuzz/regressions/ and are replayed first.
  if ! cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "$seeds/$target" \
      "fuzz/regressions/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzzing: target $target FAILED (crash input in fuzz/artifacts/$target/)"
    exit 1
  fi
  echo "fuzz $target: $(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$log" | cut -d' ' -f2) runs in ${seconds}s, no crash"
done
rm -f "$log"
echo "fuzzing: all targets ran ${seconds}s without a crash"
