#!/usr/bin/env bash
# Runs every vlm command over the test fixtures, in every output format, and saves what
# each printed (stdout, stderr with timings masked, exit status) and the files it wrote,
# so that a restructuring can be checked to change no output:
#
#   tests/cli-outputs.sh OLD_VLM_BINARY before/
#   tests/cli-outputs.sh target/debug/vlm after/
#   diff -r before after
#
# Runs in a fixed scratch folder ($VLM_OUTPUTS_SCRATCH, default /tmp/vlm-cli-outputs,
# emptied first), so that the absolute paths some outputs hold are the same in both runs.
# With PostgreSQL 15 and pgvector installed (.ci/install-postgres) the --to/--in commands
# run too, against a server started in the scratch folder.
set -uo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 VLM_BINARY OUTPUT_DIR" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
vlm=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=$2
scratch=${VLM_OUTPUTS_SCRATCH:-/tmp/vlm-cli-outputs}
rm -rf "$out" "$scratch"
mkdir -p "$out" "$scratch"
out=$(cd "$out" && pwd)
cd "$scratch" || exit 2

# The fixtures, copied with their times (the embedding cache's namespace includes the
# weights file's modification time).
fixtures=$repo/tests/fixtures
mkdir -p out hostile
cp -rp "$fixtures/models/tiny-quickgelu" m
cp -rp "$fixtures/models/tiny-gelu-f16" m2
cp -rp "$fixtures/models/siglip" siglip
cp -rp "$fixtures/models/openclip-quickgelu" openclip
cp -rp "$fixtures/images" img
for f in truncated.jpg truncated.png zero_bytes.jpg text_renamed.jpg bomb.png corrupt_idat.png cmyk.jpg; do
    cp -p "$fixtures/hostile/$f" hostile/
done
# A labelled folder, with one unreadable image.
for class in astronaut chelsea coffee rocket; do
    mkdir -p "ds/$class"
    cp -p img/"$class"* "ds/$class/"
done
cp -p hostile/zero_bytes.jpg ds/rocket/broken.jpg
printf 'astronaut\tspace man\nchelsea=cat\n' >map.txt
# Example images per label for --examples.
mkdir -p ex/cat ex/rocket
cp -p img/chelsea.jpg img/chelsea.png ex/cat/
cp -p img/rocket.jpg img/rocket_16bit.png ex/rocket/
printf 'img/coffee.jpg\nimg/rocket.png\nmissing.png\nimg/chelsea.tiff\n' >list.txt
printf 'img/coffee.jpg\0img/astronaut.png\0' >list0.txt
printf 'cat\nrocket\n# a comment\ncoffee cup|mug\nastronaut\n' >labels.txt

export HF_HUB_OFFLINE=1 VLM_PACK_CACHE_DIR=$scratch/pack VLM_CACHE_DIR=$scratch/cache
unset VLM_MODEL HF_HOME HF_HUB_CACHE HF_ENDPOINT HF_TOKEN RAYON_NUM_THREADS VLM_NO_PACK_CACHE
export RAYON_NUM_THREADS=2

labels="cat,rocket,coffee cup|mug,astronaut,person"

# Timings, rates and memory differ from run to run; everything else must not.
mask() {
    sed -E \
        -e 's/[0-9]+(\.[0-9]+)? (s|MiB)\b/# \2/g' \
        -e 's#[0-9]+(\.[0-9]+)? images/s#\# images/s#g'
}

# run NAME [--stdin FILE] ARGS...: runs vlm ARGS, saving NAME.out, NAME.err and NAME.rc.
run() {
    local name=$1
    shift
    local stdin=/dev/null
    if [ "$1" = --stdin ]; then
        stdin=$2
        shift 2
    fi
    "$vlm" "$@" <"$stdin" >"$out/$name.out" 2>"$out/$name.err.raw"
    echo $? >"$out/$name.rc"
    mask <"$out/$name.err.raw" >"$out/$name.err"
    rm "$out/$name.err.raw"
}

# --- classify -------------------------------------------------------------------------
c=(classify -m m img --labels "$labels")
run c_table "${c[@]}"
for f in json jsonl csv tsv table; do run "c_$f" "${c[@]}" -f "$f"; done
run c_k2 "${c[@]}" -k 2 -f jsonl
run c_multi "${c[@]}" --multi-label -f jsonl
run c_multi_t "${c[@]}" --multi-label --threshold 0.1 -f csv
run c_minp "${c[@]}" --min-probability 0.5 -f jsonl
run c_minp_table "${c[@]}" --min-probability 0.5
run c_templates "${c[@]}" --templates imagenet7 -f jsonl
run c_template "${c[@]}" --template '{}' -f tsv
run c_labelsfile classify -m m img --labels-file labels.txt -f jsonl
run c_verbose "${c[@]}" -v -f jsonl
run c_quiet "${c[@]}" -q
run c_out_jsonl "${c[@]}" -o out/c.jsonl
run c_out_csv "${c[@]}" -o out/c.csv
run c_out_json "${c[@]}" -o out/c.json -v
run c_out_txt "${c[@]}" -o out/c.txt
run c_out_bad "${c[@]}" -o out/c.xyz
run c_resume1 classify -m m img/astronaut.jpg img/coffee.jpg --labels "$labels" -o out/r.jsonl
run c_resume2 "${c[@]}" -o out/r.jsonl --resume -v
run c_organize_dry "${c[@]}" --organize copy --dest out/sorted --dry-run -f jsonl
run c_organize_copy "${c[@]}" --organize copy --dest out/sorted2 --min-probability 0.3 -f csv -v
run c_organize_multi "${c[@]}" --multi-label --organize copy --dest out/sorted3 -q
(cd out && find sorted2 sorted3 | sort) >"$out/c_organize_tree.txt"
run c_hostile classify -m m hostile img/coffee.jpg --labels "$labels" -f jsonl
run c_hostile_table classify -m m hostile --labels "$labels" -v
run c_allow_truncated classify -m m hostile --labels "$labels" --allow-truncated -f jsonl
run c_max_mp classify -m m img --labels "$labels" --max-megapixels 0.1 -f jsonl
run c_files_from classify -m m --files-from list.txt --labels "$labels" -f jsonl
run c_null classify -m m --files-from list0.txt -0 --labels "$labels" -f csv
run c_stdin --stdin list.txt classify -m m --files-from - --labels "$labels" -f jsonl
run c_stdin_table --stdin list.txt classify -m m --files-from - --labels "$labels"
run c_cache1 "${c[@]}" --cache=out/cache -v -f jsonl
run c_cache2 "${c[@]}" --cache=out/cache -v -f jsonl
run c_cache_default "${c[@]}" --cache -v -f jsonl
run c_examples classify -m m img --labels "$labels" --examples ex -v -f jsonl
run c_examples_wb classify -m m img --labels "$labels" --examples ex --examples-weight 2 --examples-sharpness 3 -v
run c_examples_bad classify -m m img --labels "dog,car" --examples ex
run c_jpeg_downscale "${c[@]}" --jpeg-downscale -f jsonl
run c_siglip classify -m siglip img --labels "$labels" --multi-label -f jsonl
run c_siglip_single classify -m siglip img --labels "$labels" -f csv
run c_openclip classify -m openclip img --labels "$labels" -f jsonl -v
run c_shard "${c[@]}" --shard 1/2 -f jsonl
run c_exclude "${c[@]}" --exclude '*.png' --ext jpg,png,webp -v
run c_depth classify -m m ds --labels "$labels" --max-depth 1 -v
run c_glob classify -m m 'img/*.jpg' --labels "$labels" -f jsonl
run c_url classify -m m http://127.0.0.1:9/x.jpg img/coffee.jpg --labels "$labels" -f jsonl
run c_batch "${c[@]}" -b 3 -j 1 --threads 1 -f jsonl
run c_f16 "${c[@]}" --dtype f16 -f jsonl
run c_no_pack "${c[@]}" --no-pack-cache -f jsonl -v
run c_err_minp "${c[@]}" --min-probability 2
run c_err_threshold classify -m siglip img --labels "$labels" --multi-label --threshold 3
run c_err_resume "${c[@]}" --resume -o out/x.csv
run c_err_nolabels classify -m m img
run c_err_emptylabels classify -m m img --labels ","
run c_err_model classify -m no-such-dir img --labels "$labels"
run c_err_template "${c[@]}" --template 'no braces'
run c_err_weight "${c[@]}" --examples ex --examples-weight=-1
run c_err_nothing classify -m m no-such-file.jpg --labels "$labels"

# --- embed ----------------------------------------------------------------------------
run e_npy embed -m m img -o out/e.npy
run e_safetensors embed -m m img -o out/e.safetensors
run e_jsonl embed -m m img -o out/e.jsonl -v
run e_raw embed -m m img -o out/raw.jsonl --no-normalize
run e_format embed -m m img -o out/e.dat -f jsonl
run e_text embed -m m --text "a cat,a dog" -o out/t.jsonl
run e_text_file embed -m m --text-file labels.txt -o out/t.npy
run e_text_raw embed -m m --text "a cat" -o out/t.safetensors --raw
run e_hostile embed -m m hostile img/coffee.jpg -o out/h.jsonl
run e_stdin --stdin list.txt embed -m m --files-from - -o out/s.jsonl
run e_cache embed -m m img -o out/ec.jsonl --cache=out/cache -v
run e_err_output embed -m m img
run e_err_ext embed -m m img -o out/e.xyz
run e_err_name embed -m m img -o out/e.npy --text "a
b"

# --- search ---------------------------------------------------------------------------
run s_table search -m m "a cat" img
for f in json jsonl csv tsv; do run "s_$f" search -m m "a cat" img -f "$f"; done
run s_top search -m m "a rocket" img -n 3 -v
run s_image search -m m --image img/chelsea.jpg img
run s_image_outside search -m m --image img/chelsea.jpg ds -n 4
run s_out search -m m "a cat" img -o out/s.csv
run s_out_jsonl search -m m "a cat" img -o out/s.jsonl
run s_hostile search -m m "x" hostile img
run s_files_from search -m m "a cup" --files-from list.txt
run s_cache search -m m "a cat" img --cache=out/cache -v
run s_err_empty search -m m "" img
run s_err_noinputs search -m m "x"
run s_err_image search -m m --image img img
run s_err_image_missing search -m m --image nothing.png img
run s_err_in_inputs search -m m "x" img --in postgresql://h/db

# --- eval -----------------------------------------------------------------------------
run v_table eval -m m ds
run v_json eval -m m ds -f json
run v_verbose eval -m m ds -v --most-confused 2
run v_compare eval -m m ds --compare-templates 'a photo of a {}.,{}' --compare-templates imagenet7
run v_compare_json eval -m m ds --compare-templates 'a photo of a {}.,{}' -f json
run v_templates eval -m m ds --templates imagenet7
run v_models eval -m m ds --models m,m2
run v_models_json eval -m m ds --models m,m2 -f json
# Their images/s column is a timing.
sed -E -i -e 's/ +[0-9]+\.[0-9]+( +[0-9.]+ [KMG]?B)/ #\1/' -e 's/"images_per_second":[0-9.e+-]+/"images_per_second":#/g' \
    "$out/v_models.out" "$out/v_models_json.out"
run v_files eval -m m ds --confusion-csv out/confusion.csv --heatmap out/heat.svg
run v_report eval -m m ds --report out/eval.html
run v_mapping eval -m m ds --labels-file map.txt -f json
run v_err_files_from eval -m m ds --files-from list.txt
run v_err_report_inside eval -m m ds --report ds/page.html
run v_err_report_models eval -m m ds --report out/x.html --models m,m2
run v_err_dir eval -m m no-such-dir
run v_err_templates eval -m m ds --compare-templates 'no braces'

# --- fit ------------------------------------------------------------------------------
run f_fit fit -m m ds -o out/probe.safetensors --epochs 50
run f_fit_verbose fit -m m ds -o out/probe2.safetensors --holdout 0 --epochs 5 -v
run f_fit_mapping fit -m m ds -o out/probe3.safetensors --labels-file map.txt --seed 3
run f_err_holdout fit -m m ds -o out/x.safetensors --holdout 1
run f_err_lr fit -m m ds -o out/x.safetensors --learning-rate -1
run c_probe classify -m m img --probe out/probe.safetensors -f jsonl
run c_probe_table classify -m m img --probe out/probe.safetensors -k 2 --min-probability 0.4
run c_probe_multi classify -m m img --probe out/probe.safetensors --multi-label --threshold 0 -f jsonl
run c_err_probe_model classify -m m2 img --probe out/probe.safetensors

# --- report ---------------------------------------------------------------------------
run r_file report out/c.jsonl -o out/page.html
run r_self report out/c.jsonl -o out/page2.html --self-contained --title "A title"
run r_hostile_file report out/h.jsonl -o out/page_h.html
run r_dir report -m m img --labels "$labels" -o out/rp.html
run r_dir_verbose report -m m img hostile --labels "$labels" -o out/rp_v.html -v
run r_dir_multi report -m m img --labels "$labels" --multi-label -o out/sub/rp2.html
run r_dir_probe report -m m img --probe out/probe.safetensors -o out/rp3.html --min-probability 0.4
run r_err_folder report img -o out/x.html
run r_err_noout report out/c.jsonl
run r_err_html report -m m img --labels "$labels" -o out/page.jsonl
run r_err_bad_file report list.txt -o out/x.html

# --- the rest -------------------------------------------------------------------------
run models models
for shell in bash zsh fish; do run "completions_$shell" completions "$shell"; done
run man man
run version --version
run help --help
for cmd in classify eval fit models embed search bench report completions man; do
    run "help_$cmd" "$cmd" --help
done
run err_unknown frobnicate

# --- databases ------------------------------------------------------------------------
pg=${VLM_PG_BIN:-/usr/lib/postgresql/15/bin}
if [ -x "$pg/initdb" ] && [ -f "$("$pg/pg_config" --sharedir)/extension/vector.control" ]; then
    db=$scratch/pg
    mkdir -p "$db"
    as_pg=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$db"
        as_pg=(runuser -u postgres --)
    fi
    "${as_pg[@]}" "$pg/initdb" -D "$db/data" -U vlm --auth=trust -E UTF8 --no-locale --no-sync >/dev/null
    "${as_pg[@]}" "$pg/pg_ctl" -D "$db/data" -l "$db/log" -w \
        -o "-k $db -c listen_addresses='' -c fsync=off" start >/dev/null
    url="postgresql://vlm@/postgres?host=$db"
    run d_embed embed -m m img --to "$url" -v
    run d_embed_again embed -m m img --to "$url" -v
    cp img/coffee.png img/coffee_copy.png
    run d_embed_new embed -m m img --to "$url"
    rm img/coffee_copy.png
    run d_embed_hostile embed -m m hostile img/rocket.jpg --to "$url&table=other"
    run d_classify classify -m m img --labels "$labels" --to "$url" --table labelled -f jsonl
    run d_classify_multi classify -m m img --labels "$labels" --to "$url" --table labelled --multi-label -f csv
    run d_search_in search -m m "a cat" --in "$url" -n 3
    run d_search_in_image search -m m --image img/wide_400x8.png --in "$url" -n 2 -f jsonl
    run d_err_search_other search -m m2 "a cat" --in "$url"
    run d_err_embed_other embed -m m2 img --to "$url"
    "$pg/psql" -h "$db" -U vlm -d postgres -At -c \
        "select path, content_hash from vlm_embeddings order by path" >"$out/d_rows.txt" 2>&1
    "$pg/psql" -h "$db" -U vlm -d postgres -At -c \
        "select path, content_hash, top_label, labels from labelled_labels order by path" >"$out/d_labels.txt" 2>&1
    "${as_pg[@]}" "$pg/pg_ctl" -D "$db/data" -m immediate -w stop >/dev/null
else
    echo "no PostgreSQL with pgvector: the database commands were not run" >"$out/d_skipped.txt"
fi

# The files the commands wrote (the embedding cache's entries are listed, not kept).
(cd out && find cache -type f | sort) >"$out/cache_files.txt"
rm -rf out/cache
cp -r out "$out/files"
echo "saved the outputs of $(ls "$out"/*.rc | wc -l) runs in $out"
