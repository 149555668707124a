# Sourced by the sweep scripts: finished cells' small files kept in git ($CELLS) and the
# git-ignored sweep folder ($OUT) copied into each other. $FILES lists the files of a cell (paths
# inside it); $1 of each function is the file that marks a cell finished.

copy_cell_files() {  # copy_cell_files FROM TO: the $FILES that FROM holds
  for f in $FILES; do
    if [ -f "$1/$f" ]; then mkdir -p "$(dirname "$2/$f")"; cp -p "$1/$f" "$2/$f"; fi
  done
}

restore_cells() {  # committed finished cells -> sweep folder (never over a finished cell)
  [ -d "$CELLS" ] || return 0
  mkdir -p "$OUT"
  [ -f "$OUT/sweep.json" ] || [ ! -f "$CELLS/sweep.json" ] || cp -p "$CELLS/sweep.json" "$OUT/"
  find "$CELLS" -name "$1" | while read -r s; do
    cell=$(dirname "${s#"$CELLS"/}")
    [ -f "$OUT/$cell/$1" ] && continue
    rm -rf "${OUT:?}/$cell"  # an unfinished copy of a cell finished elsewhere
    copy_cell_files "$CELLS/$cell" "$OUT/$cell"
    echo "restored $cell"
  done
}

collect_cells() {  # finished cells' small files -> $CELLS (a damaged cell set aside is not)
  mkdir -p "$CELLS"
  [ -f "$OUT/sweep.json" ] && cp -p "$OUT/sweep.json" "$CELLS/"
  find "$OUT" -name "$1" -not -path "*/.damaged-*" | while read -r s; do
    cell=$(dirname "${s#"$OUT"/}")
    copy_cell_files "$OUT/$cell" "$CELLS/$cell"
  done
}
