fn main() -> anyhow::Result<()> {
    lore::cli::main()
}
