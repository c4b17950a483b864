/* Harmless test sample: loops forever, for the emulation time and instruction limits. */
int main(void)
{
    volatile unsigned long n = 0;

    for (;;)
        n++;
    return 0;
}
