# Sourced by the sweep scripts: finished cells' small files kept in git ($CELLS) and the
# git-ignored sweep folder ($OUT) copied into each other. $FILES lists the files of a cell (paths
# inside it); the arguments of each function are the files that mark a cell finished (a
# transfer cell's own finetune/summary.json is not a cell).

copy_cell_files() {  # copy_cell_files FROM TO: the $FILES that FROM holds
  for f in $FILES; do
    if [ -f "$1/$f" ]; then mkdir -p "$(dirname "$2/$f")"; cp -p "$1/$f" "$2/$f"; fi
  done
}

restore_cells() {  # committed finished cells -> sweep folder (never over a finished cell)
  [ -d "$CELLS" ] || return 0
  mkdir -p "$OUT"
  [ -f "$OUT/sweep.json" ] || [ ! -f "$CELLS/sweep.json" ] || cp -p "$CELLS/sweep.json" "$OUT/"
  for done in "$@"; do
    find "$CELLS" -name "$done" -not -path "*/finetune/*" | while read -r s; do
      cell=$(dirname "${s#"$CELLS"/}")
      finished "$OUT/$cell" "$@" && continue
      rm -rf "${OUT:?}/$cell"  # an unfinished copy of a cell finished elsewhere
      copy_cell_files "$CELLS/$cell" "$OUT/$cell"
      echo "restored $cell"
    done
  done
}

finished() {  # finished DIR NAME...: DIR holds one of the files that mark a cell finished
  local dir=$1; shift
  for done in "$@"; do [ -f "$dir/$done" ] && return 0; done
  return 1
}

collect_cells() {  # finished cells' small files -> $CELLS (a damaged cell set aside is not)
  mkdir -p "$CELLS"
  [ -f "$OUT/sweep.json" ] && cp -p "$OUT/sweep.json" "$CELLS/"
  for done in "$@"; do
    find "$OUT" -name "$done" -not -path "*/.damaged-*" -not -path "*/finetune/*" |
      while read -r s; do
        cell=$(dirname "${s#"$OUT"/}")
        copy_cell_files "$OUT/$cell" "$CELLS/$cell"
      done
  done
}
